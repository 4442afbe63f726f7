-- An order-free digest of {table}'s per-date hashes on or before $through.
SELECT count(*), coalesce(sum(hash(date, rows, hash)), 0)::HUGEINT
FROM {table}_dates
WHERE date <= $through
