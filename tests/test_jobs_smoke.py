"""Job entry points run as `main(argv)` against a throwaway lakehouse."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_job
from pyspark.sql import SparkSession


def test_smoke_job_creates_the_lakehouse_and_reconciles(spark: SparkSession, tmp_path: Path) -> None:
    root = tmp_path / "lh"
    summary = run_job("smoke_table", ["--env", "local", "--conf-override", f"lakehouse.root={root}",
                                      "--users", "300"])
    assert summary["rows"] == 300
    assert summary["events"] == sum(i % 17 for i in range(300)) + 150
    assert (root / "_smoke" / "smoke" / "_delta_log").is_dir()
    # Idempotent: the same window again gives the same table contents.
    again = run_job("smoke_table", ["--conf-override", f"lakehouse.root={root}", "--users", "300"])
    assert (again["rows"], again["events"]) == (summary["rows"], summary["events"])


def test_job_fails_before_spark_on_a_config_typo(tmp_path: Path) -> None:
    from shopper_profiles.config import ConfigError

    with pytest.raises(ConfigError, match="lakehouse.rot"):
        run_job("smoke_table", ["--conf-override", f"lakehouse.rot={tmp_path}"])
