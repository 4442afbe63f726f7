-- Execution facts of a position formed from the scores of day t (pipeline/evaluation/portfolio.py),
-- one row per stock traded on t whose next market day t+1 it traded too (and t+2 is a market
-- day of the data):
--   buy_ok    it can be bought on t+1: it trades and does not open at the limit up
--   short_ok  it can be sold short on t+1: it trades and does not open at the limit down
--   exec_ret  what the position earns: bought at the average price p of t+1, sold at p of t+2;
--             a stock with no trade on t+2 (suspended, delisted) cannot be sold and is valued
--             at its last traded price, the adjusted close of t+1.
-- p and the market calendar as in sql/features/labels.sql (exec_ret = label when t+2 trades).
-- A-share daily limits, from the data's own columns: 20% for STAR (SH688/SH689) and for ChiNext
-- (SZ300/SZ301) from 2020-08-24, 5% for ST names (name contains "ST": ST, *ST, S*ST), else 10%.
-- The limit price is the previous close in today's raw terms (close x factor / today's factor:
-- the exchange's ex-dividend reference price) x (1 +- limit), rounded to the cent. A stock's
-- first day has no previous close and no limit. Not modelled: the unlimited first five days of
-- STAR and post-reform ChiNext listings (they get 20%).
WITH cal AS (
    SELECT date,
        lead(date, 1) OVER (ORDER BY date) AS d1,
        lead(date, 2) OVER (ORDER BY date) AS d2
    FROM (SELECT DISTINCT date FROM prices)
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
    FROM prices
    WINDOW s AS (PARTITION BY instrument ORDER BY date)
),
flags AS (
    SELECT instrument, date, p, close_adj,
        coalesce(open >= round(prev_close * (1 + lim), 2) - 0.005, false) AS open_up,
        coalesce(open <= round(prev_close * (1 - lim), 2) + 0.005, false) AS open_down
    FROM px
),
ahead AS (
    SELECT instrument, date,
        lead(date, 1) OVER s AS n1, lead(p, 1) OVER s AS p1, lead(close_adj, 1) OVER s AS c1,
        lead(open_up, 1) OVER s AS up1, lead(open_down, 1) OVER s AS down1,
        lead(date, 2) OVER s AS n2, lead(p, 2) OVER s AS p2
    FROM flags
    WINDOW s AS (PARTITION BY instrument ORDER BY date)
)
SELECT c.di, s.ji,
    NOT a.up1 AS buy_ok,
    NOT a.down1 AS short_ok,
    CAST((CASE WHEN a.n2 = cal.d2 THEN a.p2 ELSE a.c1 END) / a.p1 - 1 AS DOUBLE) AS exec_ret
FROM ahead AS a
JOIN cal ON cal.date = a.date
JOIN store_cal AS c ON c.date = a.date
JOIN store_inst AS s ON s.instrument = a.instrument
WHERE a.n1 = cal.d1
  AND cal.d2 IS NOT NULL   -- the data's last two days: the outcome is not known yet (no row)
