DELETE FROM feature_panel USING (SELECT date, instrument FROM stage_feature_panel) AS s
WHERE feature_panel.date = s.date AND feature_panel.instrument = s.instrument
