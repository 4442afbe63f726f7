-- The source of the `features` table (alpha158:<sql hash> or feature_panel): the store's static key.
SELECT name, source FROM feature_builds WHERE name = 'features'
