-- One row per date of feature_panel: its row count and an order-free hash of its rows. The
-- panel's fingerprint and its prefix key (pipeline.data.ingest.panel_prefix_key) are read from
-- here; an ingest re-hashes only the dates it touched.
CREATE TABLE IF NOT EXISTS feature_panel_dates (
    date DATE NOT NULL,
    rows BIGINT NOT NULL,
    hash HUGEINT NOT NULL
)
