#!/usr/bin/env sh
# Automated mode: every setting comes from config.yaml; nothing is asked. Extra flags go to the pipeline.
set -e
cd "$(dirname "$0")"
# Python: the project's .venv when it exists, else python3 (which creates .venv and installs into it).
if [ -x .venv/bin/python ]; then BOOT=.venv/bin/python; else BOOT=python3; fi
PY=$("$BOOT" scripts/setup_env.py)
# generate -> convert -> pretrain -> fine-tune -> RF -> XGBoost -> report (unchanged stages are skipped)
exec "$PY" -m exmed_bert.pipeline --config config.yaml "$@"
