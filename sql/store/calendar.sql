-- Store day index: market trading days (distinct dates of prices), 0-based.
CREATE OR REPLACE TEMP TABLE store_cal AS
SELECT date, CAST(row_number() OVER (ORDER BY date) - 1 AS INTEGER) AS di
FROM (SELECT DISTINCT date FROM prices)
