-- One row per date of the dated input table {table} (prices, feature_panel): its row count and
-- an order-free hash of its rows. The table's fingerprint and its prefix key
-- (pipeline.data.dated_files.prefix_key) are read from here; an ingest re-hashes only the dates
-- it touched. ({table} is filled in by warehouse.run_table_sql from a checked name.)
CREATE TABLE IF NOT EXISTS {table}_dates (
    date DATE NOT NULL,
    rows BIGINT NOT NULL,
    hash HUGEINT NOT NULL
)
