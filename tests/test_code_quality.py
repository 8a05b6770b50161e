"""ruff and mypy stay clean (house style 16): a lint regression fails the suite, not a reviewer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "lib", "jobs", "tests"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_on_lib() -> None:
    # The cache outside the checkout (like the horovod wheel's): a fresh clone on the same machine
    # re-analyses only what changed; mypy invalidates entries by file hash and its own version.
    cache = Path(os.environ.get("SHOPPER_MYPY_CACHE", Path.home() / ".cache" / "shopper_profiles" / "mypy"))
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), "lib"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
