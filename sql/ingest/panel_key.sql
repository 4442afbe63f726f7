-- An order-free digest of the panel's per-date hashes on or before $through.
SELECT count(*), coalesce(sum(hash(date, rows, hash)), 0)::HUGEINT
FROM feature_panel_dates
WHERE date <= $through
