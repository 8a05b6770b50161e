"""Behaviour family: action counts and spend per window, sessions, dwell, conversion,
category and brand distributions, top search terms, recency of each action type."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopper_profiles.features import days_ago, population, ratio, share_map, top_category, within_days
from shopper_profiles.features.schemas import ACTIONS

RECENCY = {"view": "view", "search": "search", "cart": "add_to_cart", "purchase": "purchase"}


def behaviour_features(events_cut: DataFrame, items: DataFrame, as_of: date, windows: Sequence[int],
                       top_terms: int = 5, top_brands: int = 5) -> DataFrame:
    etype = F.col("event_type")
    aggs = []
    for days in windows:
        inside = within_days(as_of, days)
        for name, action in ACTIONS.items():
            aggs.append(F.sum(F.when(inside & (etype == action), 1).otherwise(0)).cast("long").alias(f"{name}_{days}d"))
        spend = F.when(inside & (etype == "purchase"), F.col("price") * F.col("quantity"))
        aggs.append(F.round(F.coalesce(F.sum(spend), F.lit(0.0)), 2).alias(f"spend_{days}d"))
        aggs.append(F.countDistinct(F.when(inside, F.col("session_id"))).cast("long").alias(f"sessions_{days}d"))
    for name, action in RECENCY.items():
        aggs.append(F.min(F.when(etype == action, days_ago(F.col("ts"), as_of))).alias(f"days_since_last_{name}"))
    counts = events_cut.groupBy("user_id").agg(*aggs)

    last30 = events_cut.where(within_days(as_of, 30) & F.col("session_id").isNotNull())
    dwell = (last30.groupBy("user_id", "session_id")
             .agg((F.unix_timestamp(F.max("ts")) - F.unix_timestamp(F.min("ts"))).alias("seconds"))
             .groupBy("user_id").agg(F.avg("seconds").alias("avg_session_seconds_30d")))

    last90 = events_cut.where(within_days(as_of, 90))
    item_events = last90.where(F.col("item_id").isNotNull()).withColumn("top", top_category(F.col("category")))
    categories = share_map(item_events.groupBy("user_id", "top").count(), "top", "count").withColumnRenamed(
        "shares", "category_share_90d")
    with_brand = item_events.join(items.select("item_id", "brand").where(F.col("brand").isNotNull()), "item_id")
    brand_counts = with_brand.groupBy("user_id", "brand").count().withColumn(
        "_r", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("count"), "brand")))
    brands = share_map(brand_counts.where(F.col("_r") <= top_brands), "brand", "count").withColumnRenamed(
        "shares", "brand_share_90d")
    words = last90.where(etype == "search").select(
        "user_id", F.explode(F.split(F.lower(F.col("query")), r"[^\p{L}\p{N}]+")).alias("term")
    ).where(F.length("term") >= 3)
    ranked_terms = words.groupBy("user_id", "term").count().withColumn(
        "_r", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("count"), "term")))
    terms = ranked_terms.where(F.col("_r") <= top_terms).groupBy("user_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("_r", "term"))), lambda s: s["term"]).alias("top_search_terms_90d"))

    frame = (population(events_cut, as_of).join(counts, "user_id", "left").join(dwell, "user_id", "left")
             .join(categories, "user_id", "left").join(brands, "user_id", "left").join(terms, "user_id", "left"))
    return frame.select(
        "*",
        ratio(F.col("carts_30d"), F.col("views_30d")).alias("cart_rate_30d"),
        ratio(F.col("purchases_30d"), F.col("views_30d")).alias("purchase_rate_30d"),
        ratio(F.col("purchases_30d"), F.col("carts_30d")).alias("cart_to_purchase_30d"),
    ).withColumn("top_search_terms_90d", F.coalesce("top_search_terms_90d", F.array().cast("array<string>")))
