INSERT INTO predictions
SELECT CAST(date AS DATE), instrument, model, stockset, score, run_id, model_version, created_at
FROM staged_predictions
