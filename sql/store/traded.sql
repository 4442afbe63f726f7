SELECT c.di, s.ji FROM prices AS p
JOIN store_cal AS c ON c.date = p.date
JOIN store_inst AS s ON s.instrument = p.instrument
