SELECT path, size, mtime_ns, sha256, rows, min_date, max_date, dates, status
FROM ingest_files
ORDER BY path
