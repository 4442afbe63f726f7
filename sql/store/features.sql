-- Feature rows of store days >= $from_day (0 = all; a store being extended reads its new days).
SELECT c.di, s.ji, f.* EXCLUDE (date, instrument) FROM features AS f
JOIN store_cal AS c ON c.date = f.date
JOIN store_inst AS s ON s.instrument = f.instrument
WHERE c.di >= $from_day
