-- 1 when a table or view of that name exists in the warehouse, else 0.
SELECT count(*) FROM information_schema.tables WHERE table_name = $t
