-- The store's days in index order (after calendar.sql made store_cal).
SELECT date FROM store_cal ORDER BY di
