-- Rows the normalisation is fitted on: train-segment stock-days only, a deterministic hash
-- sample (1 in $every) so the fit reads a bounded number of rows and never sees later data.
SELECT f.* EXCLUDE (date, instrument) FROM features AS f
WHERE f.date BETWEEN $start AND $end AND hash(f.instrument, f.date) % $every = 0
