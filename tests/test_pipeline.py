"""The jobs as users run them: ingestion, feature backfill and `make run`'s pipeline, end to end."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import run_job
from pyspark.sql import SparkSession

SMALL = ["simulator.users=120", "simulator.days=20", "simulator.items_per_leaf=10", "model.hidden_size=16", "model.layers=1",
         "model.max_len=20", "model.batch_size=16", "model.epochs=2", "model.text_init=false",
         "model.training_snapshots=1"]


def overrides(root) -> list[str]:
    out = ["--conf-override", f"lakehouse.root={root}"]
    for item in SMALL:
        out += ["--conf-override", item]
    return out


@pytest.mark.slow
def test_ingest_then_backfill_then_whole_pipeline(spark: SparkSession, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "pipeline")
    root = tmp_path / "lh"
    report = run_job("ingest_events", ["--source", "simulator", "--from", "2024-01-01", "--to", "2024-01-15",
                                       *overrides(root)])
    assert report["balanced"] and report["entities"]["events"]["new_rows"] > 1000
    snapshots = run_job("build_features", ["--backfill", "2024-01-11", "2024-01-12", *overrides(root)])
    assert [s["as_of"] for s in snapshots] == ["2024-01-11", "2024-01-12"]
    assert all(s["active_users"] > 50 for s in snapshots)
    from deltalake import DeltaTable

    behaviour = DeltaTable(str(root / "silver" / "features_behaviour"))
    dates = {str(d) for d in behaviour.to_pyarrow_table(columns=["snapshot_date"]).column("snapshot_date").to_pylist()}
    assert sorted(dates) == ["2024-01-11", "2024-01-12"]
    whole = run_job("run_pipeline", overrides(tmp_path / "whole"))
    assert whole["smoke"]["rows"] == 10_000
    assert whole["ingest"]["balanced"]
    assert whole["features"]["as_of"] == "2024-01-21" and whole["features"]["active_users"] > 100
    sequences = DeltaTable(str(tmp_path / "whole" / "silver" / "behaviour_sequences")).to_pyarrow_table(
        filters=[("snapshot_date", "=", date(2024, 1, 21))])  # the training snapshot (01-07) is there too
    assert sequences.num_rows == whole["features"]["active_users"]
    assert max(sequences.column("sequence_length").to_pylist()) <= 50
    # The training snapshot is the horizon (14 days) before the latest one: its labels are observed.
    assert whole["training_set"]["training_set"]["as_of"] == "2024-01-07"
    assert whole["train"]["champion"] is True and whole["train"]["model_version"] == "1"
    assert whole["evaluate"]["model_version"] == "1" and whole["evaluate"]["rows"] > 50
    # [5/7]: profiles at D (full) and at the latest day (incremental), explanations, audiences, neighbours, demand.
    assert whole["score"]["full"]["as_of"] == "2024-01-07" and whole["score"]["full"]["mode"] == "full"
    refresh = whole["score"]["incremental"]
    assert refresh["mode"] == "incremental" and refresh["profiles"] == whole["features"]["active_users"]
    assert 0 < refresh["rescored"] <= refresh["profiles"]
    assert whole["explain"]["rows"] > 0 and whole["explain"]["faithfulness"]["users"] >= 0
    assert set(whole["audiences"]["audiences"]["sizes"]) >= {"churn_risk_high_spenders", "loyal_full_price"}
    assert whole["audiences"]["similar_users"]["rows"] == 10 * refresh["profiles"]
    assert whole["audiences"]["demand_backtest"]["observed"] is True


@pytest.mark.slow
def test_online_retail_through_the_product_pipeline(spark: SparkSession, tmp_path, monkeypatch) -> None:
    """Real data through the product's own jobs (ingest -> features -> training set -> Horovod
    training -> evaluation), its period read from bronze: every eighth customer of UCI Online Retail
    plus the first lines without a customer (quarantined)."""
    import csv
    import gzip
    from datetime import datetime, timedelta

    from shopper_profiles.config import load_config

    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "pipeline")
    source = load_config("local").data_dir + "/online_retail.csv.gz"
    path, kept, anonymous, last = tmp_path / "retail.csv", 0, 0, datetime.min
    with gzip.open(source, "rt", newline="") as handle, open(path, "w", newline="") as out:
        rows, writer = csv.reader(handle), csv.writer(out)
        writer.writerow(next(rows))
        for row in rows:
            customer = row[6]
            if (customer and int(float(customer)) % 8 == 0) or (not customer and anonymous < 200):
                writer.writerow(row)
                kept += 1
                anonymous += not customer
                if customer:
                    last = max(last, datetime.fromisoformat(row[4]))
    report = run_job("run_pipeline", ["--source", "online_retail", "--path", str(path),
                                      "--steps", "ingest,training_set,train,evaluate", *overrides(tmp_path / "retail")])
    events = report["ingest"]["entities"]["events"]
    assert events["input_rows"] == kept and report["ingest"]["balanced"] and events["quarantined_rows"] >= anonymous
    # The period comes from bronze, not the simulator's calendar: E = the day after the last
    # invoice - 14 days, T = E - 14 days (a time holdout).
    evaluation_day = last.date() + timedelta(days=1) - timedelta(days=14)
    assert report["training_set"]["training_set"]["as_of"] == str(evaluation_day - timedelta(days=14))
    assert set(report["training_set"]["features"]) == {str(evaluation_day - timedelta(days=14)), str(evaluation_day)}
    assert report["evaluate"]["holdout"].startswith("time holdout")
    tasks = {row["task"]: row for row in report["evaluate"]["headline"]}
    # Next-basket recall@20 against repeat buy and co-purchase (Online Retail has no categories to rank by).
    assert tasks["next_basket"]["metric"] == "recall@20" and 0 <= tasks["next_basket"]["profile_model"] <= 1
    assert {"purchase_next_window", "churn_next_window"} <= set(tasks)
    assert not any(task.startswith(("truth_", "planted_")) for task in tasks)  # no planted truth on real data
