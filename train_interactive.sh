#!/usr/bin/env sh
# Interactive mode: a step-by-step wizard asks for the data, dataset and ClinVec settings, then runs the pipeline.
set -e
cd "$(dirname "$0")"
if [ -x .venv/bin/python ]; then BOOT=.venv/bin/python; else BOOT=python3; fi
PY=$("$BOOT" scripts/setup_env.py)
exec "$PY" -m exmed_bert.cli.wizard --config config.yaml "$@"
