-- What each feature table was last built from (`miga features`): part of the store's fingerprint.
SELECT name, source FROM feature_builds ORDER BY name
