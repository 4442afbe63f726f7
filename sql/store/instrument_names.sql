-- The store's stocks in index order (after instruments.sql made store_inst).
SELECT instrument FROM store_inst ORDER BY ji
