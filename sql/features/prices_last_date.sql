SELECT max(date) FROM prices
