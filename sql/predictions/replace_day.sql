-- Idempotent: a rerun for the same (date, model, stockset) replaces its scores.
DELETE FROM predictions
WHERE date = $date AND model = $model AND stockset = $stockset
