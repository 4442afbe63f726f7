DELETE FROM labels WHERE date > $after
