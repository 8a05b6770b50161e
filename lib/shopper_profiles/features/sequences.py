"""Behaviour sequences: each user's last N events before the snapshot, oldest first, as
parallel arrays the model reads directly (ties in time broken by event id)."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window


def behaviour_sequences(events_cut: DataFrame, as_of: date, length: int) -> DataFrame:
    latest = Window.partitionBy("user_id").orderBy(F.desc("ts"), F.desc("event_id"))
    kept = events_cut.withColumn("_r", F.row_number().over(latest)).where(F.col("_r") <= length)
    steps = kept.groupBy("user_id").agg(
        F.array_sort(F.collect_list(F.struct("ts", "event_id", "item_id", "event_type", "category"))).alias("steps"))
    return steps.select(
        "user_id",
        F.lit(as_of).alias("snapshot_date"),
        F.transform("steps", lambda s: s["item_id"]).alias("item_ids"),
        F.transform("steps", lambda s: s["event_type"]).alias("event_types"),
        F.transform("steps", lambda s: s["ts"]).alias("event_ts"),
        F.transform("steps", lambda s: s["category"]).alias("categories"),
        F.size("steps").alias("sequence_length"),
        F.transform("steps", lambda s: s["event_id"]).alias("event_ids"),  # explanations point back at events
    )
