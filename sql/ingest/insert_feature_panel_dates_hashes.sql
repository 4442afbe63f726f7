-- Re-hash the panel's rows on $dates (the range lets DuckDB skip row groups).
INSERT INTO feature_panel_dates
SELECT date, count(*), sum(hash(p))::HUGEINT
FROM feature_panel p
WHERE date BETWEEN $lo AND $hi AND list_contains($dates, date)
GROUP BY date
