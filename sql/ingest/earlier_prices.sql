-- The warehouse's prices rows the suite's checks across rows look back on while stage_prices is
-- validated (pipeline/data/validate.py `check_relation`, `earlier`): the rows from 31 calendar
-- days before the first staged date on, less those the staged rows replace. The prices suite's
-- only look-back is a stock's previous row, checked when at most 20 calendar days earlier
-- (expectations/prices.json, adj_close_ratio); any previous row of a staged row that is that
-- near lies in this window, so a new day is checked against the day before as it would be in
-- the whole table. The date range reads a few weeks of row groups, whatever the history.
CREATE OR REPLACE TEMP VIEW earlier_prices AS
SELECT p.*
FROM prices AS p
WHERE p.date >= (SELECT min(date) FROM stage_prices) - INTERVAL 31 DAY
  AND NOT EXISTS (SELECT 1 FROM stage_prices AS s
                  WHERE s.date = p.date AND s.instrument = p.instrument)
