-- Typed copy of daily.parquet (view src_prices), validated before it touches prices.
CREATE OR REPLACE TEMP TABLE stage_prices AS
SELECT
    CAST(date AS DATE) AS date,
    CAST(instrument AS VARCHAR) AS instrument,
    CAST(name AS VARCHAR) AS name,
    CAST(open AS DOUBLE) AS open,
    CAST(high AS DOUBLE) AS high,
    CAST(low AS DOUBLE) AS low,
    CAST(close AS DOUBLE) AS close,
    CAST(volume AS BIGINT) AS volume,
    CAST(amount AS DOUBLE) AS amount,
    CAST(factor AS DOUBLE) AS factor,
    CAST(float_shares AS BIGINT) AS float_shares,
    CAST(total_shares AS BIGINT) AS total_shares
FROM src_prices
