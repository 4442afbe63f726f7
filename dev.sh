#!/usr/bin/env bash
# One entry point for a fresh machine with Python 3.11:
#   ./dev.sh demo [miga demo args]   set up .venv (idempotent) and run the embedded default
#   ./dev.sh test [pytest args]      set up .venv (idempotent) and run the test suite
#   ./dev.sh setup                   only set up .venv
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
# Telemetry off. Prefect: the server's analytics by PREFECT_SERVER_ANALYTICS_ENABLED, the SDK's
# (events and the device id it writes under PREFECT_HOME) by DO_NOT_TRACK (flows/steps.py).
export PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false DO_NOT_TRACK=1

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  # Reinstall only when pyproject.toml changed since the last successful install.
  local stamp="$VENV/.miga-installed" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-help}; shift || true
case "$cmd" in
  setup) setup ;;
  demo)  setup; exec "$VENV/bin/miga" demo "$@" ;;
  test)  setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  *) sed -n '2,6p' "$0"; exit 1 ;;
esac
