"""miga: a plain library for the MIGA stock-return pipeline; flows/ orchestrates it."""
