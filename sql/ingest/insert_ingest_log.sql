INSERT INTO ingest_log VALUES (
    now()::TIMESTAMP, $data_dir, $prices_rows, $membership_rows, $index_prices_rows,
    $feature_panel_rows, $feature_panel_fingerprint, $fingerprint
)
