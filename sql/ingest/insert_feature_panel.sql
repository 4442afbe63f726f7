INSERT INTO feature_panel BY NAME SELECT * FROM stage_feature_panel
