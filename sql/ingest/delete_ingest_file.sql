DELETE FROM ingest_files WHERE path = $path
