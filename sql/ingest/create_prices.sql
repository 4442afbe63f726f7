-- Daily stock prices, one row per (date, instrument) traded; raw prices, factor adjusts them.
CREATE TABLE IF NOT EXISTS prices (
    date DATE NOT NULL,
    instrument VARCHAR NOT NULL,
    name VARCHAR,
    open DOUBLE,
    high DOUBLE,
    low DOUBLE,
    close DOUBLE,
    volume BIGINT,
    amount DOUBLE,
    factor DOUBLE,
    float_shares BIGINT,
    total_shares BIGINT
)
