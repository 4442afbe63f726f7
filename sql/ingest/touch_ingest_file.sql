-- An unchanged file (same size and hash) with a new modification time: remember the time, so
-- the next ingest skips hashing it.
UPDATE ingest_files SET mtime_ns = $mtime_ns WHERE path = $path
