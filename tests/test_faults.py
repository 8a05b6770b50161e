"""Faults a lakehouse job meets in real life, each proven: a job killed with SIGKILL in the middle
of a write, two writers on one table at once, a corrupt or missing input file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_job
from pyspark.sql import SparkSession
from shopper_profiles.storage import DeltaStore
from test_storage_contract import D1, UNPARTITIONED, frame

PROJECT = Path(__file__).resolve().parents[1]
SHOP = ["simulator.users=80", "simulator.days=8", "simulator.items_per_leaf=10"]


def _argv(root: Path) -> list[str]:
    return [x for item in [f"lakehouse.root={root}", *SHOP] for x in ("--conf-override", item)]


def _tables(root: Path) -> dict[str, int]:
    """Every Delta table under ``root``: its row count at its last committed version (reading it
    fails if a commit was left half-done)."""
    from deltalake import DeltaTable

    return {str(p.parent.relative_to(root)): DeltaTable(str(p.parent)).to_pyarrow_table().num_rows
            for p in sorted(root.rglob("_delta_log")) if "landing" not in p.parts}


def test_two_concurrent_writers_never_lose_or_duplicate_rows(spark: SparkSession, store: DeltaStore) -> None:
    """Two appenders and two mergers (overlapping keys) on one table at once: every appended row
    is there once, every merged key once, and no writer failed (a merge that loses the race to
    a concurrent commit runs again on the new version)."""
    store.create(UNPARTITIONED)
    errors: list[BaseException] = []

    def append(writer: int) -> None:
        for batch in range(4):
            try:
                store.append(frame(spark, [(f"a{writer}-{batch}-{i}", D1, i, 1.0) for i in range(5)]), UNPARTITIONED)
            except BaseException as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

    def merge(writer: int) -> None:
        for batch in range(4):
            try:
                store.merge(frame(spark, [(f"k{i}", D1, writer * 100 + batch, 1.0) for i in range(5)]), UNPARTITIONED)
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

    threads = [threading.Thread(target=f, args=(w,)) for f in (append, merge) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = store.read(UNPARTITIONED).collect()
    keys = [r.user_id for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 4 * 5 + 5
    assert {r.views for r in rows if r.user_id.startswith("k")} <= {w * 100 + b for w in (0, 1) for b in range(4)}


def test_a_corrupt_or_missing_input_file_fails_clearly_and_writes_nothing(spark: SparkSession, tmp_path: Path,
                                                                          monkeypatch) -> None:
    from shopper_profiles.config import load_config
    from shopper_profiles.ingest.validation import CorruptInputError

    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "faults")
    source = Path(load_config("local").data_dir) / "online_retail.csv.gz"
    truncated = tmp_path / "retail.csv.gz"
    truncated.write_bytes(source.read_bytes()[:150_000])  # a download cut short
    root = tmp_path / "lh"
    with pytest.raises(CorruptInputError, match=r"retail.csv.gz cannot be read to its end \(java.io.EOFException"):
        run_job("ingest_events", ["--source", "online_retail", "--path", str(truncated), *_argv(root)])
    not_gzip = tmp_path / "renamed.csv.gz"
    not_gzip.write_bytes(b"InvoiceNo,StockCode\n536365,85123A\n")  # a plain CSV under a .gz name
    with pytest.raises(CorruptInputError, match="renamed.csv.gz cannot be read to its end"):
        run_job("ingest_events", ["--source", "online_retail", "--path", str(not_gzip), *_argv(root)])
    with pytest.raises(ValueError, match="input file .*missing.csv.gz not found; set data.dir or pass --path"):
        run_job("ingest_events", ["--source", "online_retail", "--path", str(tmp_path / "missing.csv.gz"), *_argv(root)])
    assert _tables(root) == {}  # not even an empty table was created


@pytest.mark.slow
def test_an_ingest_killed_mid_write_leaves_every_table_readable_and_a_rerun_completes(
        spark: SparkSession, tmp_path: Path, monkeypatch) -> None:
    """SIGKILL while the events' files are being written into bronze: every table still reads at
    its last committed version (no half commit), and rerunning the same window completes the load
    with counts that reconcile, every event once."""
    from deltalake import DeltaTable

    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "faults")
    root = tmp_path / "killed"
    command = [sys.executable, str(PROJECT / "jobs" / "ingest_events.py"), "--source", "simulator", *_argv(root)]
    job = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    staging = root / "bronze" / "events" / "_staging"
    deadline = time.monotonic() + 300
    while not staging.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, "the job ended before its events write began: nothing was interrupted"
    os.killpg(job.pid, signal.SIGKILL)  # the JVM and the Python workers too
    job.wait()
    after_kill = _tables(root)  # every table opens and reads at its last commit
    assert after_kill["bronze/events"] == 0 and after_kill["restricted/quarantine"] > 0  # killed between the two
    report = run_job("ingest_events", ["--source", "simulator", *_argv(root)])
    events = report["entities"]["events"]
    assert report["balanced"] and events["new_rows"] == events["accepted_rows"] > 500
    ids = DeltaTable(str(root / "bronze" / "events")).to_pyarrow_table(columns=["event_id"]).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == events["accepted_rows"]
    assert _tables(root)["restricted/quarantine"] == sum(e["quarantined_rows"] for e in report["entities"].values())
