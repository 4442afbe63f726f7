-- Per overlapped date: staged rows whose key {table} holds, and how many of them differ.
SELECT n.date, count(*) AS rows, count_if(n IS DISTINCT FROM p) AS differ
FROM stage_overlap n
JOIN {table} p ON p.date = n.date AND p.instrument = n.instrument
WHERE p.date BETWEEN $lo AND $hi
GROUP BY n.date
ORDER BY n.date
