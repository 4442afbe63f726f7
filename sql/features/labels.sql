-- Label (paper eq. 1) for every traded stock-day after $after:
--   y_t = p_{t+2} / p_{t+1} - 1, t+1 and t+2 the next MARKET trading days (distinct dates of
--   prices). NULL when the stock has no price row on t+1 or t+2, so a label never spans a
--   suspension (and the last two market days are NULL until later days are ingested).
--   The stock's next two rows are its rows on t+1 and t+2 exactly when their dates are them.
-- p = adjusted average price amount / volume x factor; where volume or amount is missing or
--   0 (no trade recorded) p falls back to the adjusted (open + high + low + close) / 4.
-- Only rows after $after are read (an extension reads its last days, not the whole history):
-- lead() looks forward only, so a label of a date after $after is the same as over every row.
WITH cal AS (
    SELECT date,
        lead(date, 1) OVER (ORDER BY date) AS d1,
        lead(date, 2) OVER (ORDER BY date) AS d2
    FROM (SELECT DISTINCT date FROM prices WHERE date > $after)
),
px AS (
    SELECT instrument, date,
        CASE WHEN volume > 0 AND amount > 0 THEN amount / volume * factor
             ELSE (open + high + low + close) / 4 * factor END AS p
    FROM prices
    WHERE date > $after
),
ahead AS (
    SELECT instrument, date,
        lead(date, 1) OVER s AS n1, lead(p, 1) OVER s AS p1,
        lead(date, 2) OVER s AS n2, lead(p, 2) OVER s AS p2
    FROM px
    WINDOW s AS (PARTITION BY instrument ORDER BY date)
)
SELECT a.date, a.instrument,
    CASE WHEN a.n1 = cal.d1 AND a.n2 = cal.d2 THEN a.p2 / a.p1 - 1 END AS label
FROM ahead AS a
JOIN cal ON cal.date = a.date
