"""Next-window demand per category, planned from profiles: the expected number of shoppers active
in each category during [D, D + horizon) is the sum of their interest scores (the interest head
is trained on exactly that event: any activity in the category in the next window), times the
model's ``demand_scale``. The head learns from examples pooled over earlier snapshots, so its
probabilities carry the shop's level of those weeks; the scale, the validation shoppers' actual
next-window categories over the head's expected ones at training, brings the sums to the latest.

Compared, when the window has been observed, with the actual count and with the naive forecast
a planner would use without profiles (last window's count, [D - horizon, D)); the error of both
is WAPE = sum |forecast - actual| / sum actual over categories. The backtest population is the
evaluation's: the shoppers whose labels of that window no training saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopper_profiles.config import Config
from shopper_profiles.features import events_between, top_category
from shopper_profiles.storage import DeltaStore, TableSpec

POPULATIONS = ("all_users", "test_users")

CATEGORY_DEMAND = TableSpec(
    "category_demand",
    T.StructType([T.StructField("as_of", T.DateType(), False), T.StructField("population", T.StringType(), False),
                  T.StructField("category", T.StringType(), False), T.StructField("horizon_days", T.IntegerType(), False),
                  T.StructField("users", T.LongType(), False), T.StructField("forecast_users", T.DoubleType(), True),
                  T.StructField("naive_users", T.LongType(), True), T.StructField("actual_users", T.LongType(), True)]),
    partition_by=("as_of",), keys=("as_of", "population", "category"),
    description="Shoppers expected active per category in the next window (from profiles), the naive last-window "
                "count, and the actual count once the window is observed.",
)


def _active_per_category(events: DataFrame, users: DataFrame, start: date, end: date) -> DataFrame:
    window = events_between(events, start, end).where(F.col("category").isNotNull())
    return window.join(users, "user_id").groupBy(top_category(F.col("category")).alias("category")).agg(
        F.countDistinct("user_id").alias("count"))


def category_demand(profiles: DataFrame, events: DataFrame, as_of: date, horizon_days: int, population: str,
                    observed: bool, scales: Mapping[str, float] | None = None) -> DataFrame:
    """Pure: one profile snapshot (already restricted to ``population``'s users) + bronze events ->
    one row per category. ``observed``: the window [D, D + horizon) is complete in ``events``;
    ``scales``: each model version's ``demand_scale`` (1 for a version not named)."""
    users = profiles.select("user_id").distinct()
    n_users = users.count()
    scale = F.lit(1.0)
    if scales:
        by_version = F.create_map(*[x for v, s in sorted(scales.items()) for x in (F.lit(v), F.lit(float(s)))])
        scale = F.coalesce(by_version[F.col("model_version")], F.lit(1.0))
    forecast = profiles.select(scale.alias("scale"), F.explode("interest_scores").alias("category", "score")).groupBy(
        "category").agg(F.sum(F.col("score") * F.col("scale")).alias("forecast_users"))
    naive = _active_per_category(events, users, as_of - timedelta(days=horizon_days), as_of).withColumnRenamed(
        "count", "naive_users")
    frame = forecast.join(naive, "category", "left")
    if observed:
        actual = _active_per_category(events, users, as_of, as_of + timedelta(days=horizon_days))
        frame = frame.join(actual.withColumnRenamed("count", "actual_users"), "category", "left").withColumn(
            "actual_users", F.coalesce("actual_users", F.lit(0)))
    else:
        frame = frame.withColumn("actual_users", F.lit(None).cast("long"))
    return frame.select(F.lit(as_of).alias("as_of"), F.lit(population).alias("population"), "category",
                        F.lit(horizon_days).alias("horizon_days"), F.lit(n_users).cast("long").alias("users"),
                        "forecast_users", F.coalesce("naive_users", F.lit(0)).cast("long").alias("naive_users"),
                        F.col("actual_users").cast("long"))


def wape(rows: list[dict[str, Any]], forecast: str) -> float | None:
    """Weighted absolute percentage error of one forecast column against ``actual_users``."""
    actual = sum(r["actual_users"] or 0 for r in rows)
    if not rows or rows[0]["actual_users"] is None or actual == 0:
        return None
    return sum(abs((r[forecast] or 0) - r["actual_users"]) for r in rows) / actual


def held_out(profiles: DataFrame, trained_on: dict[str, date | None], horizon_days: int, as_of: date,
             ) -> tuple[DataFrame, str]:
    """Pure: D's profiles of the shoppers no label of [D, D + horizon) was trained on, and the rule
    that chose them -- the evaluation's: every shopper outside the validation split (which chose the
    epoch and the refit) when each model version behind the profiles (``trained_on``: version ->
    training snapshot) was trained on labels ending by D, a time holdout; else the test split."""
    from shopper_profiles.model.build import is_time_holdout
    from shopper_profiles.model.dataset import split_of

    versions = ", ".join(sorted(trained_on))
    split = split_of(F.col("user_id"))
    if trained_on and all(s is not None and is_time_holdout(s, horizon_days, as_of) for s in trained_on.values()):
        return profiles.where(split != "validation"), (
            f"time holdout: model version(s) {versions} trained on labels ending by {as_of}; every shopper outside "
            "the validation split")
    return profiles.where(split == "test"), (
        f"user holdout: model version(s) {versions} trained on labels of this window (or record no training "
        "snapshot); the test split only")


def forecast_demand(spark: SparkSession, store: DeltaStore, config: Config, as_of: date, population: str = "all_users",
                    ) -> dict[str, Any]:
    """Category demand for profile snapshot D over ``population``: ``all_users``, or ``test_users``,
    the shoppers held out from every model behind D's profiles, for an honest backtest."""
    from shopper_profiles.ingest.bronze import EVENTS
    from shopper_profiles.model.build import label_window_observed
    from shopper_profiles.model.registry import RegisteredModel
    from shopper_profiles.profiles.scoring import profiles_at

    if population not in POPULATIONS:
        raise ValueError(f"population {population!r}: use one of {', '.join(POPULATIONS)}")
    profiles = profiles_at(store, as_of)
    horizon = config.model.horizon_days
    models = {v: RegisteredModel.resolve(config, version=v)
              for v in sorted(r[0] for r in profiles.select("model_version").distinct().collect())}
    scales = {v: float(m.spec.get("demand_scale") or 1.0) for v, m in models.items()}
    holdout = "every profiled shopper"
    if population == "test_users":
        profiles, holdout = held_out(profiles, {v: m.training_snapshot for v, m in models.items()}, horizon, as_of)
    events = store.read(EVENTS)
    last = events.agg(F.max("ts")).collect()[0][0]
    observed = label_window_observed(last, as_of, horizon)
    store.create(CATEGORY_DEMAND)
    version = store.overwrite(category_demand(profiles, events, as_of, horizon, population, observed, scales),
                              CATEGORY_DEMAND, window={"as_of": as_of})
    rows = [r.asDict() for r in store.read(CATEGORY_DEMAND).where(
        (F.col("as_of") == F.lit(as_of)) & (F.col("population") == population)).collect()]
    return {"as_of": str(as_of), "population": population, "holdout": holdout, "users": rows[0]["users"] if rows else 0,
            "demand_scale": scales, "categories": len(rows), "observed": observed,
            "table_version": version, "wape_profiles": wape(rows, "forecast_users"), "wape_naive_last_window": wape(rows, "naive_users")}
