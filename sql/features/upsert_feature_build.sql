INSERT OR REPLACE INTO feature_builds
VALUES ($name, $source, $last_date, $prefix_fp, $rows, $seconds, current_timestamp)
