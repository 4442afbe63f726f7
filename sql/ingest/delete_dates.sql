-- A changed file's dates (those it held before and holds now, not shared with another file):
-- cleared before its rows are inserted again. The range lets DuckDB skip row groups.
DELETE FROM {table}
WHERE date BETWEEN $lo AND $hi AND list_contains($dates, date)
