-- Labels of the last two labelled market days looked at days not ingested yet: recompute
-- everything after the third-last labelled market day.
SELECT coalesce(max(date), DATE '1900-01-01') FROM (
    SELECT DISTINCT date FROM prices WHERE date <= $last_date ORDER BY date DESC OFFSET 2 LIMIT 1
)
