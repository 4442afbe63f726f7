-- Store instrument index: every stock that ever traded (delisted ones included), 0-based.
CREATE OR REPLACE TEMP TABLE store_inst AS
SELECT instrument, CAST(row_number() OVER (ORDER BY instrument) - 1 AS INTEGER) AS ji
FROM (SELECT DISTINCT instrument FROM prices)
