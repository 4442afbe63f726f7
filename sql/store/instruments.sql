-- Store instrument index: every stock that ever traded (delisted ones included), 0-based, in
-- order of first trading day: stocks listed after a store's last day come after its stocks,
-- so an extended store keeps the old stock axis (pipeline/store/build.py).
CREATE OR REPLACE TEMP TABLE store_inst AS
SELECT instrument, CAST(row_number() OVER (ORDER BY first_date, instrument) - 1 AS INTEGER) AS ji
FROM (SELECT instrument, min(date) AS first_date FROM prices GROUP BY instrument)
