-- The rows of {table} on the dates the newest ingest wrote, named as the ingest names its staged
-- rows so that the same checks (and, for prices, the same look back:
-- sql/ingest/earlier_prices.sql) apply to them. A view takes no parameters: {lo}, {hi} and
-- {dates} are DATE literals written by pipeline.data.dated_files.stage_latest from dates read
-- out of the warehouse (the range lets DuckDB skip row groups).
CREATE OR REPLACE TEMP VIEW stage_{table} AS
SELECT * FROM {table} WHERE date BETWEEN {lo} AND {hi} AND list_contains([{dates}], date)
