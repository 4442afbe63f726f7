-- One row per file ingested into a dated table (daily.parquet or a file under daily/ for prices,
-- features.parquet or a file under features/ for feature_panel), replaced when the file is
-- re-ingested. path: relative to the data folder, e.g. features/2019-03.parquet.
-- size and sha256 (of the bytes) decide new / unchanged / changed; mtime_ns only lets a file
-- whose size and mtime are unchanged skip re-hashing. dates: the distinct dates it held (a
-- changed file's old dates are cleared before its new rows go in).
CREATE TABLE IF NOT EXISTS ingest_files (
    path VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT,
    sha256 VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    min_date DATE,
    max_date DATE,
    dates DATE[],
    status VARCHAR NOT NULL,        -- new, changed (the last ingest that wrote it)
    ingested_at TIMESTAMP NOT NULL
)
