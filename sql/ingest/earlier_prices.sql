-- The warehouse's prices rows the suite's checks across rows look back on while stage_prices is
-- validated (pipeline/data/validate.py `check_relation`, `earlier`): the rows of the 31
-- calendar days before the first staged date. The prices suite's only look-back is a stock's
-- previous row, checked when at most 20 calendar days earlier (expectations/prices.json,
-- adj_close_ratio): a staged stock's first row finds its previous row here, so a new day is
-- checked against the day before as it would be in the whole table. No staged row lies in
-- that window, so none of these rows is being replaced (no join with the staged keys: a
-- daily.parquet re-delivered whole has no window at all). A partial re-delivery of old dates
-- is compared with its own and the earlier rows, not with the warehouse's rows between its
-- dates. The date range reads a few weeks of row groups, whatever the history.
CREATE OR REPLACE TEMP VIEW earlier_prices AS
SELECT p.*
FROM prices AS p
WHERE p.date >= (SELECT min(date) FROM stage_prices) - INTERVAL 31 DAY
  AND p.date < (SELECT min(date) FROM stage_prices)
