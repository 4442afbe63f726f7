-- A feature panel ingested from features.parquet replaces Alpha158 (the paper's 626 features).
CREATE OR REPLACE VIEW features AS SELECT * FROM feature_panel
