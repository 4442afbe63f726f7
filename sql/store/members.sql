-- Point-in-time stock set: on day t a stock is in $stockset iff one of its membership
-- intervals covers t (end_date NULL = still a member) and it traded that day. Delisted stocks
-- stay in for the days they were members (no survivorship bias). Store days >= $from_day only
-- (0 = all; a store being extended with the same membership table recomputes its last days).
SELECT DISTINCT c.di, s.ji
FROM prices AS p
JOIN membership AS m
  ON m.instrument = p.instrument AND m.index_name = $stockset
 AND p.date >= m.start_date AND (m.end_date IS NULL OR p.date <= m.end_date)
JOIN store_cal AS c ON c.date = p.date
JOIN store_inst AS s ON s.instrument = p.instrument
WHERE c.di >= $from_day
