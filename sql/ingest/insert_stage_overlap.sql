INSERT INTO stage_overlap BY NAME
SELECT * FROM stage_{table} WHERE date BETWEEN $lo AND $hi AND list_contains($dates, date)
