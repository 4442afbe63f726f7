CREATE OR REPLACE TEMP TABLE stage_membership AS
SELECT
    CAST(index_name AS VARCHAR) AS index_name,
    CAST(instrument AS VARCHAR) AS instrument,
    CAST(start_date AS DATE) AS start_date,
    CAST(end_date AS DATE) AS end_date
FROM src_membership
