-- The staged rows on dates other files already hold (filled by insert_stage_overlap), in
-- {table}'s own column order, so that a row compares with the table's row as one value.
CREATE OR REPLACE TEMP TABLE stage_overlap AS SELECT * FROM {table} LIMIT 0
