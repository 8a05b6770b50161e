"""Every job's command line: `--help` explains every flag, and a mistake the user can fix ends
with one line saying what to do (exit code 2), not a traceback."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
from conftest import REPO
from pyspark.sql import SparkSession
from shopper_profiles.runtime import cli

JOBS = sorted(p.stem for p in (REPO / "jobs").glob("*.py"))


def job_main(name: str):
    spec = importlib.util.spec_from_file_location(f"cli_{name}", REPO / "jobs" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


class _ParsedError(Exception):
    pass


@pytest.mark.parametrize("name", JOBS)
def test_help_explains_every_flag(name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    parsers: list[argparse.ArgumentParser] = []

    def capture(self: argparse.ArgumentParser, args=None, namespace=None):
        parsers.append(self)
        raise _ParsedError

    main = job_main(name)
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(_ParsedError):
            main([])
    (parser,) = parsers
    undocumented = [a.option_strings for a in parser._actions if a.option_strings and not (a.help or "").strip()]
    assert undocumented == [], f"jobs/{name}.py: flags without help: {undocumented}"
    assert parser.description and len(parser.description.strip()) > 40, f"jobs/{name}.py has no description"
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert "--env" in shown and "--conf-override" in shown and f"jobs/{name}.py" in shown  # the usage examples


def test_a_bad_env_or_date_names_what_is_expected(capsys: pytest.CaptureFixture) -> None:
    main = job_main("score_profiles")
    with pytest.raises(SystemExit) as done:
        cli(main, ["--as-of", "2024-01-20", "--env", "production"])
    assert done.value.code == 2
    assert "invalid choice: 'production' (choose from 'local', 'dev', 'staging', 'prod')" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(main, ["--as-of", "20-01-2024"])
    assert "'20-01-2024' is not a date; give it as YYYY-MM-DD" in capsys.readouterr().err


def test_a_missing_table_says_which_job_writes_it(spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPPER_VERBOSE", raising=False)
    with pytest.raises(SystemExit) as done:
        cli(job_main("build_training_set"), ["--as-of", "2024-01-20", "--conf-override", f"lakehouse.root={tmp_path}"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "table events does not exist" in err and "run jobs/ingest_events.py --source <source> first" in err
    assert "Traceback" not in err


def test_a_missing_secret_stops_the_ingest_before_anything_lands(spark: SparkSession, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPPER_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("SHOPPER_VERBOSE", raising=False)
    with pytest.raises(SystemExit):
        cli(job_main("ingest_events"), ["--source", "simulator", "--conf-override", f"lakehouse.root={tmp_path}",
                                        "--conf-override", "privacy.secret_scope=shop", "--conf-override",
                                        "privacy.secret_key=pseudonym-key"])
    err = capsys.readouterr().err
    assert "privacy.secret_scope='shop' needs Databricks dbutils; elsewhere set SHOPPER_PSEUDONYM_KEY" in err
    assert not (tmp_path / "landing").exists()


def test_the_mlflow_ui_says_when_there_is_nothing_it_can_serve(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from shopper_profiles.model import ui

    with pytest.raises(SystemExit) as done:
        cli(ui.main, ["--conf-override", f"lakehouse.root={tmp_path}"])
    assert done.value.code == 2
    assert f"no MLflow store at {tmp_path}/mlflow.db yet: run `make run`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(ui.main, ["--conf-override", f"lakehouse.root={tmp_path}", "--conf-override", "mlflow.tracking_uri=databricks"])
    assert "that store has its own UI (on Databricks: the workspace's Experiments and Models pages)" in capsys.readouterr().err
