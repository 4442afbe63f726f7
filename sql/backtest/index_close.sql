-- Daily close of one index (the benchmark of a stock set), for index returns with the label's timing.
SELECT date, close
FROM index_prices
WHERE index_name = $index_name
ORDER BY date
