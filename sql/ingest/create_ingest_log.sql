-- One row per successful ingest: what came in and the warehouse fingerprint after it.
CREATE TABLE IF NOT EXISTS ingest_log (
    ingested_at TIMESTAMP NOT NULL,
    data_dir VARCHAR NOT NULL,
    prices_rows BIGINT,
    membership_rows BIGINT,
    index_prices_rows BIGINT,
    feature_panel_rows BIGINT,
    feature_panel_fingerprint VARCHAR,  -- content hash of the wide panel, scanned once here
    fingerprint VARCHAR NOT NULL
)
