-- Columns follow the first features file ingested (date, instrument, its feature columns).
CREATE TABLE IF NOT EXISTS feature_panel AS SELECT * FROM stage_feature_panel LIMIT 0
