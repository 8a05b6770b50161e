"""Next-window demand per category, planned from profiles: the expected number of shoppers active
in each category during [D, D + horizon) is the sum of their interest scores (the interest head
is trained on exactly that event: any activity in the category in the next window).

Compared, when the window has been observed, with the actual count and with the naive forecast
a planner would use without profiles (last window's count, [D - horizon, D)); the error of both
is WAPE = sum |forecast - actual| / sum actual over categories.
"""

from __future__ import annotations

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
                    observed: bool) -> DataFrame:
    """Pure: one profile snapshot (already restricted to ``population``'s users) + bronze events ->
    one row per category. ``observed``: the window [D, D + horizon) is complete in ``events``."""
    users = profiles.select("user_id").distinct()
    n_users = users.count()
    forecast = profiles.select(F.explode("interest_scores").alias("category", "score")).groupBy("category").agg(
        F.sum("score").alias("forecast_users"))
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


def forecast_demand(spark: SparkSession, store: DeltaStore, config: Config, as_of: date, population: str = "all_users",
                    ) -> dict[str, Any]:
    """Category demand for profile snapshot D over ``population`` (``all_users``, or ``test_users``:
    the shoppers the model never trained on, for an honest backtest at its training snapshot)."""
    from shopper_profiles.ingest.bronze import EVENTS
    from shopper_profiles.model.build import label_window_observed
    from shopper_profiles.model.dataset import split_of
    from shopper_profiles.profiles.scoring import profiles_at

    if population not in POPULATIONS:
        raise ValueError(f"population {population!r}: use one of {', '.join(POPULATIONS)}")
    profiles = profiles_at(store, as_of)
    if population == "test_users":
        profiles = profiles.where(split_of(F.col("user_id")) == "test")
    horizon = config.model.horizon_days
    events = store.read(EVENTS)
    last = events.agg(F.max("ts")).collect()[0][0]
    observed = label_window_observed(last, as_of, horizon)
    store.create(CATEGORY_DEMAND)
    version = store.overwrite(category_demand(profiles, events, as_of, horizon, population, observed), CATEGORY_DEMAND,
                              window={"as_of": as_of})
    rows = [r.asDict() for r in store.read(CATEGORY_DEMAND).where(
        (F.col("as_of") == F.lit(as_of)) & (F.col("population") == population)).collect()]
    return {"as_of": str(as_of), "population": population, "categories": len(rows), "observed": observed,
            "table_version": version, "wape_profiles": wape(rows, "forecast_users"), "wape_naive_last_window": wape(rows, "naive_users")}
