"""The simulator: deterministic, windows compose, the planted truth shows in behaviour, and
planted dirt comes back out of ingestion under the matching rule."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from conftest import ingest_simulator, simulated_lakehouse
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window
from shopper_profiles.config import SimulatorConfig, load_config
from shopper_profiles.ingest.bronze import EVENTS, PLANTED_TRUTH, QUARANTINE, USER_ID_MAP
from shopper_profiles.ingest.load import Ingestion
from shopper_profiles.ingest.simulator import DIRTY_KINDS, simulate, simulate_events
from shopper_profiles.ingest.sources import land_source
from shopper_profiles.storage import open_store


def small(**changes: object) -> SimulatorConfig:
    base = load_config("local").simulator
    values = {"users": 300, "days": 30, "items_per_leaf": 20, "dirty_rate": 0.05, "duplicate_rate": 0.01} | changes
    return base.model_copy(update=values)


def same_rows(a: DataFrame, b: DataFrame) -> bool:
    return a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0


def test_same_seed_gives_identical_tables_and_another_seed_does_not(spark: SparkSession) -> None:
    cfg = small()
    first, second = simulate(spark, cfg), simulate(spark, cfg)
    for name in ("events", "users", "items", "social_edges"):
        assert same_rows(getattr(first, name), getattr(second, name)), name
    assert same_rows(first.truth, second.truth)
    other = simulate(spark, small(seed=cfg.seed + 1))
    assert not same_rows(first.events.select("user_id", "item_id"), other.events.select("user_id", "item_id"))


def test_windows_compose_into_the_whole_period(spark: SparkSession) -> None:
    cfg = small()
    mid = cfg.start_date + timedelta(days=12)
    end = cfg.start_date + timedelta(days=cfg.days)
    whole = simulate_events(spark, cfg, cfg.start_date, end)
    parts = simulate_events(spark, cfg, cfg.start_date, mid).unionByName(simulate_events(spark, cfg, mid, end))
    assert same_rows(whole, parts)
    outside = (F.col("ts") < F.lit(cfg.start_date).cast("timestamp")) | (F.col("ts") >= F.lit(end).cast("timestamp"))
    assert whole.where(outside).count() == 0


def test_planted_truth_shows_in_behaviour(spark: SparkSession) -> None:
    cfg = small(users=600, days=45)
    events = simulate_events(spark, cfg, cfg.start_date, cfg.start_date + timedelta(days=cfg.days))
    truth = simulate(spark, cfg).truth
    with_truth = events.join(truth, F.col("user_id") == F.col("raw_user_id"))
    # Interests: most events fall in the user's three planted top categories.
    top = F.split(F.col("category"), " > ")[0]
    in_top = with_truth.where(F.col("category").isNotNull()).select(
        F.array_contains("top_interests", top).cast("double").alias("hit"))
    assert in_top.agg(F.avg("hit")).first()[0] > 0.95
    # Price sensitivity: relative to the category's average, the most sensitive quartile pays less.
    purchases = with_truth.where("event_type = 'purchase'").withColumn(
        "relative_price", F.col("price") / F.avg("price").over(Window.partitionBy("category")))
    quartiles = purchases.withColumn("q", F.ntile(4).over(Window.orderBy("price_sensitivity")))
    paid = dict(quartiles.groupBy("q").agg(F.avg("relative_price")).collect())
    assert paid[4] < 0.85 * paid[1], paid
    # Demographics correlate with interests.
    beauty = truth.select("gender", F.array_contains("top_interests", "beauty").cast("double").alias("b"))
    share = dict(beauty.groupBy("gender").agg(F.avg("b")).collect())
    assert share["female"] > share["male"] + 0.2, share
    # Churned users stop: no events after their churn time.
    assert with_truth.where(F.col("churn_ts").isNotNull() & (F.col("ts") >= F.col("churn_ts"))).count() == 0
    # Propensity drives buying.
    buyers = with_truth.groupBy("raw_user_id", "purchase_propensity").agg(
        F.avg((F.col("event_type") == "purchase").cast("double")).alias("buy_rate"))
    assert buyers.stat.corr("buy_rate", "purchase_propensity") > 0.4


@pytest.mark.slow
def test_planted_dirt_comes_out_under_the_matching_rule(spark: SparkSession, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "k")
    config = load_config("local", [f"lakehouse.root={tmp_path}", "simulator.users=300", "simulator.days=30",
                                   "simulator.items_per_leaf=20", "simulator.dirty_rate=0.05", "simulator.duplicate_rate=0.01"])
    store = open_store(spark, config)
    batch, window, load_id = land_source(spark, config, "simulator")
    planted = dict(batch.injected.groupBy("kind").count().collect())
    assert set(DIRTY_KINDS) <= set(planted), "every dirty kind is planted at this rate"
    loads = Ingestion(spark, store, config, batch, window, load_id).run()
    quarantined = dict(store.read(QUARANTINE).groupBy("rule").count().collect())
    expected = {k: v for k, v in planted.items() if k != "exact_duplicate"}
    assert quarantined == expected
    (events,) = [x for x in loads if x.entity == "events"]
    assert events.duplicate_rows == planted["exact_duplicate"]
    assert events.input_rows == events.accepted_rows + events.quarantined_rows + events.duplicate_rows
    assert store.read(PLANTED_TRUTH).count() == 300
    assert store.read(PLANTED_TRUTH).join(store.read(USER_ID_MAP), "user_id").count() == 300
    assert store.read(EVENTS).where(F.col("user_id").startswith("sim-")).count() == 0


@pytest.mark.slow
def test_incremental_windows_append_only_new_events(spark: SparkSession, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "k")
    config, store = simulated_lakehouse(spark, tmp_path, users=150, days=20, items_per_leaf=10)
    start, mid, end = date(2024, 1, 1), date(2024, 1, 11), date(2024, 1, 21)

    def load(a: date, b: date):
        _batch, loads = ingest_simulator(spark, config, store, a, b)
        (events,) = [x for x in loads if x.entity == "events"]
        return events

    first = load(start, mid)
    after_first = store.read(EVENTS).count()
    second = load(mid, end)
    assert store.read(EVENTS).count() == after_first + second.new_rows
    assert second.already_loaded_rows == 0
    version = store.version(EVENTS)
    again = load(mid, end)
    assert (again.new_rows, again.already_loaded_rows) == (0, second.accepted_rows)
    assert store.version(EVENTS) == version
    # Both windows together equal one load of the whole period.
    whole_config, whole_store = simulated_lakehouse(spark, tmp_path / "whole", users=150, days=20, items_per_leaf=10)
    ingest_simulator(spark, whole_config, whole_store, start, end)
    assert same_rows(whole_store.read(EVENTS).drop("load_id"), store.read(EVENTS).drop("load_id"))
    assert first.new_rows + second.new_rows == whole_store.read(EVENTS).count()
