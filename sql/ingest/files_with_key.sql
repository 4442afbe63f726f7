-- Which of the staged files hold the key ($date, $instrument) (a duplicate across files).
SELECT DISTINCT filename
FROM read_parquet($files, filename = true, union_by_name = true, hive_partitioning = false)
WHERE CAST(date AS DATE) = $date AND CAST(instrument AS VARCHAR) = $instrument
ORDER BY filename
