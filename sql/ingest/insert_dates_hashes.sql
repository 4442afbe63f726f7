-- Re-hash {table}'s rows on $dates (the range lets DuckDB skip row groups).
INSERT INTO {table}_dates
SELECT date, count(*), sum(hash(p))::HUGEINT
FROM {table} p
WHERE date BETWEEN $lo AND $hi AND list_contains($dates, date)
GROUP BY date
