INSERT INTO stage_overlap BY NAME
SELECT * FROM stage_feature_panel WHERE date BETWEEN $lo AND $hi AND list_contains($dates, date)
