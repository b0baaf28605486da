#!/usr/bin/env sh
# Test command: set up .venv with the test tools when needed, then run the whole test suite.
set -e
cd "$(dirname "$0")"
if [ -x .venv/bin/python ]; then BOOT=.venv/bin/python; else BOOT=python3; fi
PY=$("$BOOT" scripts/setup_env.py --dev)
exec "$PY" -m pytest tests "$@"
