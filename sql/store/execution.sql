-- Execution facts of a position formed from the scores of day t (pipeline/evaluation/portfolio.py),
-- one row per stock traded on t whose next market day t+1 it traded too (and t+2 is a market
-- day of the data):
--   buy_ok    it can be bought on t+1: it trades and does not open at the limit up
--   short_ok  it can be sold short on t+1: it trades and does not open at the limit down
--   exec_ret  what the position earns: bought at the average price p of t+1, sold at p of t+2;
--             a stock with no trade on t+2 (suspended, delisted) cannot be sold and is valued
--             at its last traded price, the adjusted close of t+1.
-- p as in sql/features/labels.sql (exec_ret = label when t+2 trades); market days t+1 and t+2
-- are store_cal's di + 1 and di + 2 (the distinct dates of prices, as the labels' calendar).
-- A-share daily limits, from the data's own columns: 20% for STAR (SH688/SH689) and for ChiNext
-- (SZ300/SZ301) from 2020-08-24, 5% for ST names (name contains "ST": ST, *ST, S*ST), else 10%.
-- The limit price is the previous close in today's raw terms (close x factor / today's factor:
-- the exchange's ex-dividend reference price) x (1 +- limit), rounded to the cent. A stock's
-- first day has no previous close and no limit. Not modelled: the unlimited first five days of
-- STAR and post-reform ChiNext listings (they get 20%).
WITH px AS (
    SELECT c.di, s.ji, p.open,
        CASE WHEN p.volume > 0 AND p.amount > 0 THEN p.amount / p.volume * p.factor
             ELSE (p.open + p.high + p.low + p.close) / 4 * p.factor END AS p,
        p.close * p.factor AS close_adj,
        lag(p.close) OVER s * lag(p.factor) OVER s / p.factor AS prev_close,
        CASE WHEN p.instrument LIKE 'SH688%' OR p.instrument LIKE 'SH689%' THEN 0.20
             WHEN (p.instrument LIKE 'SZ300%' OR p.instrument LIKE 'SZ301%')
                  AND p.date >= DATE '2020-08-24' THEN 0.20
             WHEN p.name LIKE '%ST%' THEN 0.05
             ELSE 0.10 END AS lim
    FROM prices AS p
    JOIN store_cal AS c ON c.date = p.date          -- di: the market calendar's day index
    JOIN store_inst AS s ON s.instrument = p.instrument
    WINDOW s AS (PARTITION BY p.instrument ORDER BY p.date)
),
flags AS (
    SELECT di, ji, p, close_adj,
        coalesce(open >= round(prev_close * (1 + lim), 2) - 0.005, false) AS open_up,
        coalesce(open <= round(prev_close * (1 - lim), 2) + 0.005, false) AS open_down
    FROM px
),
ahead AS (
    SELECT di, ji,
        lead(di, 1) OVER s AS n1, lead(p, 1) OVER s AS p1, lead(close_adj, 1) OVER s AS c1,
        lead(open_up, 1) OVER s AS up1, lead(open_down, 1) OVER s AS down1,
        lead(di, 2) OVER s AS n2, lead(p, 2) OVER s AS p2
    FROM flags
    WINDOW s AS (PARTITION BY ji ORDER BY di)
)
SELECT di, ji,
    NOT up1 AS buy_ok,
    NOT down1 AS short_ok,
    CAST((CASE WHEN n2 = di + 2 THEN p2 ELSE c1 END) / p1 - 1 AS DOUBLE) AS exec_ret
FROM ahead
WHERE n1 = di + 1                                                  -- traded on market day t+1
  AND di + 2 < (SELECT count(*) FROM store_cal)   -- t+2 is in the data: else not known yet (no row)
