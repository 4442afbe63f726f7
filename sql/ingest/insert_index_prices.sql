INSERT INTO index_prices BY NAME SELECT * FROM stage_index_prices
