-- Every date of a panel that predates feature_panel_dates (hashed once).
INSERT INTO feature_panel_dates
SELECT date, count(*), sum(hash(p))::HUGEINT FROM feature_panel p GROUP BY date
