-- Per-day facts of every traded stock-day, for a multi-day account (pipeline/evaluation/topk.py;
-- pipeline/store/build.py `_holding` turns them into the store's hold_ret, sell_ok, at_limit):
--   p          the adjusted average price (as sql/features/labels.sql): a holding is valued at it
--   open_up    it opens at the daily limit up (cannot be bought)
--   open_down  it opens at the daily limit down (cannot be sold)
-- The limit rule is the one of sql/store/execution.sql (same CTEs `px`, `flags`; the test
-- tests/code/test_topk.py checks the two agree): limits from the data's own columns, 20% for
-- STAR (SH688/SH689) and for ChiNext (SZ300/SZ301) from 2020-08-24, 5% for ST names, else 10%;
-- the limit price is the previous close in today's raw terms x (1 +- limit), to the cent.
-- Unlike execution.sql, a row is the stock's own day whatever it did the day before: a stock
-- back from a suspension can be sold on its first day back.
WITH px AS (
    SELECT instrument, date, open,
        CASE WHEN volume > 0 AND amount > 0 THEN amount / volume * factor
             ELSE (open + high + low + close) / 4 * factor END AS p,
        lag(close) OVER s * lag(factor) OVER s / factor AS prev_close,
        CASE WHEN instrument LIKE 'SH688%' OR instrument LIKE 'SH689%' THEN 0.20
             WHEN (instrument LIKE 'SZ300%' OR instrument LIKE 'SZ301%')
                  AND date >= DATE '2020-08-24' THEN 0.20
             WHEN name LIKE '%ST%' THEN 0.05
             ELSE 0.10 END AS lim
    FROM prices
    WINDOW s AS (PARTITION BY instrument ORDER BY date)
),
flags AS (
    SELECT instrument, date, p,
        coalesce(open >= round(prev_close * (1 + lim), 2) - 0.005, false) AS open_up,
        coalesce(open <= round(prev_close * (1 - lim), 2) + 0.005, false) AS open_down
    FROM px
)
SELECT c.di, s.ji, CAST(f.p AS DOUBLE) AS p, f.open_up, f.open_down
FROM flags AS f
JOIN store_cal AS c ON c.date = f.date
JOIN store_inst AS s ON s.instrument = f.instrument
