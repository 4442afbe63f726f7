-- The dates the newest ingest wrote into one dated table: those of the files it recorded
-- (every row an ingest writes shares its transaction's now(), ingest_log's row included).
-- $file: the table's single file (daily.parquet), $folder: its folder with a slash (daily/).
SELECT DISTINCT unnest(f.dates) AS date
FROM ingest_files AS f
WHERE f.ingested_at = (SELECT max(ingested_at) FROM ingest_log)
  AND (f.path = $file OR starts_with(f.path, $folder))
ORDER BY date
