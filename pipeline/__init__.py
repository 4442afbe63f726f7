"""miga: a plain library for the MIGA stock-return pipeline (no Prefect imports here)."""
