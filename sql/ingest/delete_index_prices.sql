DELETE FROM index_prices USING stage_index_prices AS s
WHERE index_prices.date = s.date AND index_prices.index_name = s.index_name
