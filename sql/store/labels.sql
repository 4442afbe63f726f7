-- Labels of store days >= $from_day (0 = all; a store being extended recomputes its last days only).
SELECT c.di, s.ji, l.label FROM labels AS l
JOIN store_cal AS c ON c.date = l.date
JOIN store_inst AS s ON s.instrument = l.instrument
WHERE l.label IS NOT NULL AND c.di >= $from_day
