SELECT source, last_date, prefix_fp FROM feature_builds WHERE name = $name
