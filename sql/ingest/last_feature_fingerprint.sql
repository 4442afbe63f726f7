-- The feature panel's content hash from the newest ingest that left it at its current size.
SELECT feature_panel_fingerprint
FROM ingest_log
WHERE feature_panel_fingerprint IS NOT NULL AND feature_panel_rows = $rows
ORDER BY ingested_at DESC
LIMIT 1
