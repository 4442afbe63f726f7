SELECT count(*) FROM features WHERE date BETWEEN $start AND $end
