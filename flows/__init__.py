"""Prefect wiring over `pipeline` functions."""
