-- Which of $dates the panel holds already.
SELECT date FROM feature_panel_dates WHERE list_contains($dates, date) ORDER BY date
