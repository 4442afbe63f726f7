-- What `miga features` last built, so an unchanged warehouse is a no-op and new days extend.
CREATE TABLE IF NOT EXISTS feature_builds (
    name VARCHAR PRIMARY KEY,      -- features | labels | market_features
    source VARCHAR,                -- alpha158 | feature_panel | sql
    last_date DATE,                -- last date of prices the table was built from
    prefix_fp VARCHAR,             -- fingerprint of prices up to last_date (or of the inputs)
    rows BIGINT,
    seconds DOUBLE,
    built_at TIMESTAMP
)
