-- Per staged file: its rows and distinct dates (two narrow columns read).
SELECT filename, count(*) AS rows, list(DISTINCT CAST(date AS DATE)) AS dates
FROM read_parquet($files, filename = true, union_by_name = true, hive_partitioning = false)
GROUP BY filename
