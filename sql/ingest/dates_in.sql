-- Which of $dates {table} holds already.
SELECT date FROM {table}_dates WHERE list_contains($dates, date) ORDER BY date
