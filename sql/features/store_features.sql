SELECT c.di, s.ji, f.* EXCLUDE (date, instrument) FROM features AS f
JOIN store_cal AS c ON c.date = f.date
JOIN store_inst AS s ON s.instrument = f.instrument
