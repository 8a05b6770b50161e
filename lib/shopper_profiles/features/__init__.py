"""The four feature families and behaviour sequences: one pure-transform module each.

Every transform takes the bronze frames *already cut at the as-of date* (``ts < as_of``,
see :func:`events_before`) and returns one row per user of the snapshot population, so
point-in-time correctness is decided in exactly one place.
"""

from __future__ import annotations

from datetime import date, datetime, time

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

SECONDS_PER_DAY = 86400.0


def as_of_ts(as_of: date) -> datetime:
    """Snapshot D covers events strictly before D 00:00 UTC."""
    return datetime.combine(as_of, time.min)


def events_before(events: DataFrame, as_of: date) -> DataFrame:
    """The point-in-time cut: only events with ts < as_of (partition-pruned on event_date)."""
    return events.where((F.col("event_date") <= F.lit(as_of)) & (F.col("ts") < F.lit(as_of_ts(as_of))))


def events_between(events: DataFrame, start: date, end: date) -> DataFrame:
    """Events of [start, end) in whole days (partition-pruned on event_date): the label, refresh
    and demand windows use this one cut."""
    return events.where((F.col("event_date") >= F.lit(start)) & (F.col("event_date") <= F.lit(end))
                        & (F.col("ts") >= F.lit(as_of_ts(start))) & (F.col("ts") < F.lit(as_of_ts(end))))


def edges_before(edges: DataFrame, as_of: date) -> DataFrame:
    return edges.where(F.col("ts").isNull() | (F.col("ts") < F.lit(as_of_ts(as_of))))


def days_ago(ts: Column, as_of: date) -> Column:
    """Age of an event in (fractional) days at the snapshot time."""
    return (F.unix_timestamp(F.lit(as_of_ts(as_of))) - F.unix_timestamp(ts)) / SECONDS_PER_DAY


def within_days(as_of: date, days: int) -> Column:
    return F.col("ts") >= F.lit(as_of_ts(as_of)) - F.make_interval(days=F.lit(days))


def top_category(category: Column) -> Column:
    """``"beauty > skincare"`` -> ``"beauty"``; events without a category count as ``unknown``."""
    return F.coalesce(F.split(category, " > ").getItem(0), F.lit("unknown"))


def population(events_cut: DataFrame, as_of: date) -> DataFrame:
    """The snapshot's users: everyone with at least one event before the as-of date."""
    return events_cut.select("user_id").distinct().withColumn("snapshot_date", F.lit(as_of))


def ratio(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator, null when the denominator is 0 (a rate without exposure)."""
    return F.when(denominator > 0, numerator.cast("double") / denominator)


def category_median_prices(events_cut: DataFrame, *more: Column) -> DataFrame:
    """(category, ``_median``, ``more``...): the median price of each category's priced events before
    D -- the reference a shopper's price level is measured against (need family input and training
    label); null for a category without a priced event. ``more``: other per-category aggregates
    computed in the same pass."""
    price = F.col("price")
    return events_cut.groupBy("category").agg(F.median(F.when(price > 0, price)).alias("_median"), *more)


def log_price_ratio(price: Column, median: Column) -> Column:
    """log(price / category median): 0 = typical; the unit every price level averages."""
    return F.log(price / median)


def price_level(price: Column, median: Column) -> Column:
    """Aggregate: the geometric mean of price / category median. Not the plain mean: its log falls
    with fewer events (Jensen), so a model fitting it would learn activity instead of price."""
    return F.exp(F.avg(log_price_ratio(price, median)))


def share_map(frame: DataFrame, key: str, weight: str) -> DataFrame:
    """Per user, ``key -> weight / total weight`` as a map (keys sorted for stable output)."""
    totals = frame.groupBy("user_id").agg(F.sum(weight).alias("_total"))
    shares = frame.join(totals, "user_id").where(F.col("_total") > 0).select(
        "user_id", F.struct(F.col(key).alias("k"), (F.col(weight) / F.col("_total")).alias("v")).alias("kv"))
    return shares.groupBy("user_id").agg(F.map_from_entries(F.array_sort(F.collect_list("kv"))).alias("shares"))
