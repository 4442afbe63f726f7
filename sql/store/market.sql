SELECT c.di, m.* EXCLUDE (date) FROM market_features AS m
JOIN store_cal AS c ON c.date = m.date
