-- Daily index levels, one row per (date, index_name).
CREATE TABLE IF NOT EXISTS index_prices (
    date DATE NOT NULL,
    index_name VARCHAR NOT NULL,
    instrument VARCHAR,
    open DOUBLE,
    high DOUBLE,
    low DOUBLE,
    close DOUBLE,
    volume DOUBLE
)
