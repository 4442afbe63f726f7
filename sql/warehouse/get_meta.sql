SELECT id FROM warehouse_meta LIMIT 1
