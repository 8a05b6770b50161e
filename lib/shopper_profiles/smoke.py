"""A smoke table that exercises the lakehouse end to end: create, append, merge, read back."""

from __future__ import annotations

from datetime import date
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopper_profiles.storage import DeltaStore, TableSpec

SMOKE = TableSpec(
    "smoke",
    T.StructType(
        [
            T.StructField("user_id", T.StringType(), False),
            T.StructField("snapshot_date", T.DateType(), False),
            T.StructField("events", T.LongType(), True),
        ]
    ),
    partition_by=("snapshot_date",),
    keys=("user_id", "snapshot_date"),
    description="Lakehouse smoke check written by `make run`.",
)


def smoke_rows(spark: SparkSession, users: int, snapshot: date) -> DataFrame:
    """``users`` synthetic rows computed by executors (never built on the driver)."""
    return spark.range(users).select(
        F.format_string("user-%06d", F.col("id")).alias("user_id"),
        F.lit(snapshot).alias("snapshot_date"),
        (F.col("id") % 17).cast("long").alias("events"),
    )


def run_smoke(spark: SparkSession, store: DeltaStore, users: int = 10_000) -> dict[str, Any]:
    """Write one window, upsert half of it, and check the counts reconcile exactly."""
    snapshot = date(2024, 1, 1)
    store.create(SMOKE)
    store.overwrite(smoke_rows(spark, users, snapshot), SMOKE, window={"snapshot_date": snapshot})
    changed = smoke_rows(spark, users // 2, snapshot).withColumn("events", F.col("events") + 1)
    result = store.merge(changed, SMOKE)
    table = store.read(SMOKE).where(F.col("snapshot_date") == F.lit(snapshot))
    rows = table.count()
    total_events = table.agg(F.sum("events")).collect()[0][0]
    expected_events = sum(i % 17 for i in range(users)) + users // 2
    if rows != users or total_events != expected_events or result.updated != users // 2:
        raise RuntimeError(
            f"lakehouse smoke check failed: rows={rows} (want {users}), events={total_events} "
            f"(want {expected_events}), merged updates={result.updated} (want {users // 2})"
        )
    return {"table": store.path(SMOKE), "rows": rows, "events": total_events,
            "version": store.version(SMOKE), "engine": store.engine}
