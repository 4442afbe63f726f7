-- Reads every value of one parquet file (finds the file whose pages do not decode).
SELECT count(*), sum(hash(t)) FROM read_parquet($file) t
