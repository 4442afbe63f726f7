INSERT INTO prices BY NAME SELECT * FROM stage_prices
