-- One identity per warehouse file: a new file (the old one deleted) gets a new id.
INSERT INTO warehouse_meta
SELECT $id, current_timestamp::TIMESTAMP
WHERE NOT EXISTS (SELECT 1 FROM warehouse_meta)
