-- What the backtests need of every traded stock-day, the one definition of the A-share limit
-- rule (pipeline/store/build.py `execution_arrays` turns these rows into the store's
-- exec_ret, buy_ok, short_ok for the paper's portfolios and hold_ret, sell_ok, at_limit for the
-- TopkDropout account):
--   p          the adjusted average price (as sql/features/labels.sql): deals and valuations
--   close_adj  the adjusted close: the last traded price of a day
--   open_up    it opens at the daily limit up (cannot be bought)
--   open_down  it opens at the daily limit down (cannot be sold)
-- A-share daily limits, from the data's own columns: 20% for STAR (SH688/SH689) and for ChiNext
-- (SZ300/SZ301) from 2020-08-24, 5% for ST names (name contains "ST": ST, *ST, S*ST), else 10%.
-- The limit price is the previous close in today's raw terms (close x factor / today's factor:
-- the exchange's ex-dividend reference price) x (1 +- limit), rounded to the cent. A stock's
-- first day has no previous close and no limit. Not modelled: the unlimited first five days of
-- STAR and post-reform ChiNext listings (they get 20%).
-- Rows of the store days >= $from_day (0 = all; a store being extended recomputes its last days
-- only, pipeline/store/build.py), and before them each stock's last earlier row, however old (a
-- suspension, a delisting): lag() reads its close as the previous close of the stock's next row,
-- and `execution_arrays` carries its price into the days as the last traded price. Finding them
-- scans the earlier rows' instrument and date (no index), then reads those rows by row id.
WITH start AS (SELECT min(date) AS date FROM store_cal WHERE di >= $from_day),
last AS (
    SELECT arg_max(rowid, date) AS r FROM prices
    WHERE date < (SELECT date FROM start) GROUP BY instrument
),
wanted AS (
    SELECT * FROM prices WHERE date >= (SELECT date FROM start)
    UNION ALL
    SELECT * FROM prices WHERE rowid IN (SELECT r FROM last)
),
px AS (
    SELECT instrument, date, open,
        CASE WHEN volume > 0 AND amount > 0 THEN amount / volume * factor
             ELSE (open + high + low + close) / 4 * factor END AS p,
        close * factor AS close_adj,
        lag(close) OVER s * lag(factor) OVER s / factor AS prev_close,
        CASE WHEN instrument LIKE 'SH688%' OR instrument LIKE 'SH689%' THEN 0.20
             WHEN (instrument LIKE 'SZ300%' OR instrument LIKE 'SZ301%')
                  AND date >= DATE '2020-08-24' THEN 0.20
             WHEN name LIKE '%ST%' THEN 0.05
             ELSE 0.10 END AS lim
    FROM wanted
    WINDOW s AS (PARTITION BY instrument ORDER BY date)
)
SELECT c.di, s.ji, CAST(x.p AS DOUBLE) AS p, CAST(x.close_adj AS DOUBLE) AS close_adj,
    coalesce(x.open >= round(x.prev_close * (1 + x.lim), 2) - 0.005, false) AS open_up,
    coalesce(x.open <= round(x.prev_close * (1 - x.lim), 2) + 0.005, false) AS open_down
FROM px AS x
JOIN store_cal AS c ON c.date = x.date
JOIN store_inst AS s ON s.instrument = x.instrument
