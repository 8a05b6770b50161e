"""From bronze to a registered model: training set with next-window labels, Horovod training,
MLflow lineage and registry, and the champion loaded by alias scores users."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_job
from pyspark.sql import SparkSession
from pyspark.sql import functions as F


@pytest.mark.slow
def test_training_set_then_train_register_and_score(spark: SparkSession, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "model-test")
    root = tmp_path / "lh"
    conf = []
    for item in (f"lakehouse.root={root}", "simulator.users=300", "simulator.days=40", "simulator.items_per_leaf=15",
                 "model.hidden_size=16", "model.layers=1", "model.max_len=20", "model.batch_size=32",
                 "model.text_init=true", "model.training_snapshots=2"):
        conf += ["--conf-override", item]
    run_job("ingest_events", ["--source", "simulator", *conf])
    as_of = "2024-01-26"  # 40 simulated days end 2024-02-10: the 14-day label window must fit
    run_job("build_features", ["--as-of", as_of, *conf])
    with pytest.raises(ValueError, match="no behaviour_sequences for 2024-01-19"):  # the earlier snapshot is missing
        run_job("build_training_set", ["--as-of", as_of, *conf])
    run_job("build_features", ["--as-of", "2024-01-19", *conf])
    built = run_job("build_training_set", ["--as-of", as_of, *conf])
    assert set(built["splits"]) == {"train", "validation", "test"}
    assert built["example_dates"] == [as_of, "2024-01-19"]

    from deltalake import DeltaTable

    everything = DeltaTable(str(root / "gold" / "training_set")).to_pyarrow_table().to_pylist()
    assert {str(r["snapshot_date"]) for r in everything} == {as_of}  # all tokenised with T's vocabulary
    by_date = {d: [r for r in everything if str(r["example_date"]) == d] for d in (as_of, "2024-01-19")}
    assert by_date[as_of] and by_date["2024-01-19"] and len(by_date[as_of]) + len(by_date["2024-01-19"]) == len(everything)
    split = {r["user_id"]: r["split"] for r in by_date[as_of]}
    assert all(split.get(r["user_id"], r["split"]) == r["split"] for r in by_date["2024-01-19"])  # one split per shopper
    # 40 scalar features (the two rule scores last), then the need family's category affinity, one share per category.
    assert all(len(r["item_seq"]) == 20 and len(r["tabular"]) == 40 + built["categories"] for r in everything)
    # Labels come only from [S, S + 14 days) of each example's own snapshot S: no event there = churned.
    events = spark.read.parquet(*DeltaTable(str(root / "bronze" / "events")).file_uris())
    for day, end in ((as_of, "2024-02-09"), ("2024-01-19", "2024-02-02")):
        rows = by_date[day]
        window = events.where((F.col("ts") >= day) & (F.col("ts") < end))
        active_next = {r.user_id for r in window.select("user_id").distinct().collect()}
        assert {r["user_id"] for r in rows if r["churn_next"] == 0.0} == active_next & {r["user_id"] for r in rows}
        buyers = {r.user_id for r in window.where("event_type = 'purchase'").select("user_id").distinct().collect()}
        assert {r["user_id"] for r in rows if r["purchase_next"] == 1.0} == buyers & {r["user_id"] for r in rows}
    rows = by_date[as_of]

    first = run_job("train_profile_model", ["--as-of", as_of, "--np", "2", "--epochs", "2", *conf])
    assert first["ranks"] == 2 and first["champion"] is True
    assert first["weights_checksums"][0] == pytest.approx(first["weights_checksums"][1], rel=1e-6)
    assert "val_full_ndcg@10" in first["metrics"]

    import mlflow
    from mlflow import MlflowClient
    from shopper_profiles.config import load_config

    config = load_config("local", [f"lakehouse.root={root}"])
    mlflow.set_tracking_uri(config.mlflow_tracking_uri)
    run = MlflowClient().get_run(first["run_id"])
    assert run.data.tags["delta_version.training_set"] == "1"
    assert len(run.data.tags["git_commit"]) >= 7
    assert {"train_loss", "val_full_hr_at_10", "val_full_ndcg_at_10", "sequences_per_second"} <= set(run.data.metrics)
    assert "training_curve.png" in {a.path for a in MlflowClient().list_artifacts(first["run_id"])}

    model = mlflow.pyfunc.load_model(f"models:/{config.mlflow.registered_model}@champion")
    sample = [r for r in rows if r["split"] == "test"][:3]
    import pandas as pd

    columns = ("item_seq", "type_seq", "time_seq", "tabular")
    scored = model.predict(pd.DataFrame({k: [np.array(r[k]) for r in sample] for k in columns}))
    assert len(scored) == 3 and len(scored["user_embedding"][0]) == 16
    assert ((scored["purchase_intent"] >= 0) & (scored["purchase_intent"] <= 1)).all()

    # Deliverable 6: the evaluation job on the test users, the champion beside every baseline.
    evaluated = run_job("evaluate_profile_model", ["--as-of", as_of, *conf])
    table = spark.read.parquet(*DeltaTable(str(root / "gold" / "model_evaluation")).file_uris())
    found = {(r.method, r.task) for r in table.select("method", "task").distinct().collect()}
    assert {("profile_model", "next_item"), ("popularity", "next_item"), ("item_cooccurrence", "next_item"),
            ("category_rule", "next_item"), ("repeat_buy", "next_item"), ("intent_rule", "purchase_next_window"),
            ("rfm_rule", "purchase_next_window"),
            ("churn_rule", "churn_next_window"), ("profile_model", "truth_interests"), ("category_rule", "truth_interests"),
            ("churn_rule", "truth_churned"), ("majority_class", "gender")} <= found
    protocols = {r.protocol for r in table.where("task = 'next_item'").select("protocol").distinct().collect()}
    assert protocols == {"full ranking over all items, history included", "target vs 100 uniform unseen negatives"}
    assert evaluated["planted_truth"] is True and evaluated["model_version"] == first["model_version"]
    assert {h["task"] for h in evaluated["headline"]} >= {"next_item", "purchase_next_window", "churn_next_window"}

    # Popularity, recomputed here from the training set: rank = items counted at least as often.
    test_rows = [r for r in rows if r["split"] == "test" and r["next_item"] >= 0]
    counts = np.zeros(int(run.data.params["n_items"]))
    for r in rows:
        for item in r["item_seq"]:
            if item >= 2:  # 0 padding, 1 mask (item-less events)
                counts[item] += 1
    ranks = [int((counts[2:] >= counts[r["next_item"]]).sum()) - 1 for r in test_rows]
    expected_hr10 = float(np.mean(np.asarray(ranks) < 10))
    measured = table.where("method = 'popularity' AND metric = 'hr@10' AND protocol LIKE 'full%'").collect()[0].value
    assert measured == pytest.approx(expected_hr10)

    # Same snapshot and model again: the table's rows are replaced, not duplicated.
    before = table.count()
    run_job("evaluate_profile_model", ["--as-of", as_of, *conf])
    assert spark.read.parquet(*DeltaTable(str(root / "gold" / "model_evaluation")).file_uris()).count() == before
    assert "evaluation.md" in {a.path for a in MlflowClient().list_artifacts(evaluated["mlflow_run_id"])}
    assert {"validation/calibration.png", "validation/confusion_gender.png"} <= {
        a.path for a in MlflowClient().list_artifacts(first["run_id"], "validation")}
