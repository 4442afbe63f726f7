DELETE FROM features WHERE date > $after
