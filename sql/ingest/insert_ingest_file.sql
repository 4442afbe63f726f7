INSERT INTO ingest_files VALUES (
    $path, $size, $mtime_ns, $sha256, $rows, $min_date, $max_date, $dates, $status,
    now()::TIMESTAMP
)
