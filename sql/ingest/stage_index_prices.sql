CREATE OR REPLACE TEMP TABLE stage_index_prices AS
SELECT
    CAST(date AS DATE) AS date,
    CAST(index_name AS VARCHAR) AS index_name,
    CAST(instrument AS VARCHAR) AS instrument,
    CAST(open AS DOUBLE) AS open,
    CAST(high AS DOUBLE) AS high,
    CAST(low AS DOUBLE) AS low,
    CAST(close AS DOUBLE) AS close,
    CAST(volume AS DOUBLE) AS volume
FROM src_index_prices
