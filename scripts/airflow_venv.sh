#!/usr/bin/env bash
# Create (once) the Airflow venv for resources/airflow/: its own interpreter, as Airflow's
# providers do not co-install with the project's pins. Cached per requirements file, like the
# horovod wheel: prints the venv's folder.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=resources/airflow/requirements.txt
key=$(sha256sum "$requirements" | cut -c1-12)
venv=${SHOPPER_AIRFLOW_VENV:-$HOME/.cache/shopper_profiles/airflow-venv-$key}
if [[ ! -f "$venv/.complete" ]]; then
  echo "airflow venv: installing $(grep -c '^apache' "$requirements") packages into $venv (~40-80 s, once per machine)" >&2
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: --no-binary=pyspark-client \
    -r "$requirements" 2> >(grep -v "^WARNING: Location" >&2)
  touch "$venv/.complete"
fi
echo "$venv"
