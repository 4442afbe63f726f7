-- A view, not a copy: the wide panel (e.g. 2.5M rows x 626 columns) is scanned from parquet
-- by the checks and by the insert, and never materialised twice.
CREATE OR REPLACE TEMP VIEW stage_feature_panel AS
SELECT
    CAST(date AS DATE) AS date,
    CAST(instrument AS VARCHAR) AS instrument,
    * EXCLUDE (date, instrument)
FROM src_feature_panel
