-- The staged rows on dates other files already hold (filled by insert_stage_overlap), in the
-- panel's own column order, so that a row compares with the panel's row as one value.
CREATE OR REPLACE TEMP TABLE stage_overlap AS SELECT * FROM feature_panel LIMIT 0
