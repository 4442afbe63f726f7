-- Stocks with prices after $after, and the rows the Alpha158 statement reads for each: its rows
-- after $after and up to $lookback rows before them. In order of first trading day, like the
-- tensor store's stock axis (store_instruments.sql): the features table then holds stocks in
-- store order, and the store build writes each statement's stocks to neighbouring slots.
SELECT instrument,
       count(*) FILTER (WHERE date > $after)
           + least(count(*) FILTER (WHERE date <= $after), $lookback) AS n_rows
FROM prices
GROUP BY instrument
HAVING max(date) > $after
ORDER BY min(date), instrument
