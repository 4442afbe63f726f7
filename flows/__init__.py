"""Prefect wiring over `pipeline` functions.

Every `flows.*` module is imported after this file, so the telemetry opt-out is in the
environment before any of them imports Prefect (flows/steps.py quiets the rest).
"""
from pipeline.settings import apply_quiet_env

apply_quiet_env()
