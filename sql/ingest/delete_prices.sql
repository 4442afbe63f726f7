-- Upsert, step 1: drop the rows whose key is re-delivered (idempotent, incremental).
DELETE FROM prices USING stage_prices AS s
WHERE prices.date = s.date AND prices.instrument = s.instrument
