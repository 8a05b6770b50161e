"""Behaviour sequences: each user's last N events before the snapshot, oldest first, as
parallel arrays the model reads directly (ties in time broken by event id)."""

from __future__ import annotations

from collections.abc import Sequence
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


def first_touch_sequences(events: DataFrame, event_types: Sequence[str], min_count: int,
                          max_rounds: int = 50) -> DataFrame:
    """Each shopper's distinct items in the order first touched by one of ``event_types`` (ties by
    event id), after the iterative ``min_count``-core filter the public sequence files use (Amazon
    5-core: every kept shopper and item has ``min_count`` interactions among the kept ones) ->
    (user_id, item_ids). Repeats are dropped as in those files (a review is written once), so the
    public next-item protocol runs on a shop's own data unchanged."""
    firsts = (events.where(F.col("event_type").isin(list(event_types)) & F.col("item_id").isNotNull())
              .groupBy("user_id", "item_id").agg(F.min(F.struct("ts", "event_id")).alias("first")))
    pairs, size = firsts.localCheckpoint(), None
    for _ in range(max_rounds):
        count = pairs.count()
        if count == size:
            break
        size = count
        users = pairs.groupBy("user_id").count().where(F.col("count") >= min_count).select("user_id")
        items = pairs.groupBy("item_id").count().where(F.col("count") >= min_count).select("item_id")
        pairs = pairs.join(users, "user_id", "left_semi").join(items, "item_id", "left_semi").localCheckpoint()
    else:
        raise RuntimeError(f"the {min_count}-core filter did not settle in {max_rounds} rounds; "
                           "raise max_rounds or lower --min-count")
    ordered = pairs.groupBy("user_id").agg(F.array_sort(F.collect_list(F.struct("first", "item_id"))).alias("steps"))
    return ordered.select("user_id", F.transform("steps", lambda s: s["item_id"]).alias("item_ids"))


def numbered_sequences(sequences: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Shoppers and items renumbered 1.. (0 is the benchmark's padding), by pseudonym and item id:
    the exported file carries no shopper id at all -> (lines ``user item item ...`` in shopper
    order, item index: (item_index, item_id))."""
    items = (sequences.select(F.explode("item_ids").alias("item_id")).distinct()
             .withColumn("item_index", F.row_number().over(Window.orderBy("item_id"))))
    users = sequences.select("user_id").withColumn("user_index", F.row_number().over(Window.orderBy("user_id")))
    steps = (sequences.select("user_id", F.posexplode("item_ids").alias("pos", "item_id"))
             .join(items, "item_id").join(users, "user_id"))
    lines = (steps.groupBy("user_index")
             .agg(F.array_sort(F.collect_list(F.struct("pos", "item_index"))).alias("steps"))
             .select("user_index", F.concat_ws(" ", F.col("user_index").cast("string"),
                                               F.array_join(F.transform("steps", lambda s: s["item_index"].cast("string")), " "))
                     .alias("line")))
    return lines, items.select("item_index", "item_id")
