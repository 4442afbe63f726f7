DELETE FROM {table}_dates WHERE list_contains($dates, date)
