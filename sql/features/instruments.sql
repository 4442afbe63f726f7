-- Stocks with prices after $after, and the rows the Alpha158 statement reads for each: its rows
-- after $after and up to $lookback rows before them.
SELECT instrument,
       count(*) FILTER (WHERE date > $after)
           + least(count(*) FILTER (WHERE date <= $after), $lookback) AS n_rows
FROM prices
GROUP BY instrument
HAVING max(date) > $after
ORDER BY instrument
