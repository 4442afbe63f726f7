-- Every date of a {table} that predates {table}_dates (hashed once).
INSERT INTO {table}_dates
SELECT date, count(*), sum(hash(p))::HUGEINT FROM {table} p GROUP BY date
