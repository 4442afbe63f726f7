DELETE FROM feature_panel_dates WHERE list_contains($dates, date)
