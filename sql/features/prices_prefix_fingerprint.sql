-- Content hash of the prices up to $until: unchanged history means new days can extend.
SELECT count(*) AS n, coalesce(sum(hash(p)), 0) AS h FROM prices AS p WHERE p.date <= $until
