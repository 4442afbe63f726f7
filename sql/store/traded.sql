-- Stock-days with a price row, of store days >= $from_day (0 = all; a store being extended
-- recomputes its last days only, pipeline/store/build.py).
SELECT c.di, s.ji FROM prices AS p
JOIN store_cal AS c ON c.date = p.date
JOIN store_inst AS s ON s.instrument = p.instrument
WHERE c.di >= $from_day
