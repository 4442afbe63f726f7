SELECT DISTINCT instrument FROM prices WHERE date > $after ORDER BY instrument
