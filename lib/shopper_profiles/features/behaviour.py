"""Behaviour family: action counts and spend per window, sessions, dwell, conversion,
category and brand distributions, top search terms, recency of each action type."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopper_profiles.features import days_ago, ratio, share_map, top_category, within_days
from shopper_profiles.features.schemas import ACTIONS

RECENCY = {"view": "view", "search": "search", "cart": "add_to_cart", "purchase": "purchase"}


def behaviour_features(events_cut: DataFrame, items: DataFrame, as_of: date, windows: Sequence[int],
                       top_terms: int = 5, top_brands: int = 5) -> DataFrame:
    """Three passes over the cut -- per shopper and session (rolled up per shopper), per shopper
    and item category/brand, search terms -- not one per signal: each pass over bronze costs more
    than the aggregation it feeds."""
    etype = F.col("event_type")
    in30 = within_days(as_of, 30)
    per_session = []
    for days in windows:
        inside = within_days(as_of, days)
        per_session += [F.sum(F.when(inside & (etype == action), 1).otherwise(0)).alias(f"{name}_{days}d")
                        for name, action in ACTIONS.items()]
        per_session += [F.sum(F.when(inside & (etype == "purchase"), F.col("price") * F.col("quantity"))).alias(f"spend_{days}d"),
                        F.max(inside).alias(f"_inside_{days}d")]
    per_session += [F.min(F.when(etype == action, days_ago(F.col("ts"), as_of))).alias(f"days_since_last_{name}")
                    for name, action in RECENCY.items()]
    per_session += [F.min(F.when(in30, F.col("ts"))).alias("_first_30d"), F.max(F.when(in30, F.col("ts"))).alias("_last_30d")]
    sessions = events_cut.groupBy("user_id", "session_id").agg(*per_session)

    in_session = F.col("session_id").isNotNull()  # events without a session count, sessions do not
    per_user = []
    for days in windows:
        per_user += [F.sum(f"{name}_{days}d").cast("long").alias(f"{name}_{days}d") for name in ACTIONS]
        per_user += [F.round(F.coalesce(F.sum(f"spend_{days}d"), F.lit(0.0)), 2).alias(f"spend_{days}d"),
                     F.sum(F.when(in_session & F.col(f"_inside_{days}d"), 1).otherwise(0)).cast("long")
                     .alias(f"sessions_{days}d")]
    per_user += [F.min(f"days_since_last_{name}").alias(f"days_since_last_{name}") for name in RECENCY]
    dwell = F.unix_timestamp(F.col("_last_30d")) - F.unix_timestamp(F.col("_first_30d"))
    per_user.append(F.avg(F.when(in_session, dwell)).alias("avg_session_seconds_30d"))
    counts = sessions.groupBy("user_id").agg(*per_user)  # every shopper of the cut: the population

    last90 = events_cut.where(within_days(as_of, 90))
    item_events = last90.where(F.col("item_id").isNotNull()).withColumn("top", top_category(F.col("category")))
    by_item = (item_events.join(F.broadcast(items.select("item_id", "brand").where(F.col("brand").isNotNull())),
                                "item_id", "left")
               .groupBy("user_id", "top", "brand").agg(F.count(F.lit(1)).alias("count")))
    categories = share_map(by_item.groupBy("user_id", "top").agg(F.sum("count").alias("count")), "top", "count") \
        .withColumnRenamed("shares", "category_share_90d")
    brand_counts = by_item.where(F.col("brand").isNotNull()).groupBy("user_id", "brand").agg(
        F.sum("count").alias("count")).withColumn(
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

    population = counts.select("user_id", F.lit(as_of).alias("snapshot_date"), *counts.columns[1:])
    frame = (population.join(categories, "user_id", "left")
             .join(brands, "user_id", "left").join(terms, "user_id", "left"))
    return frame.select(
        "*",
        ratio(F.col("carts_30d"), F.col("views_30d")).alias("cart_rate_30d"),
        ratio(F.col("purchases_30d"), F.col("views_30d")).alias("purchase_rate_30d"),
        ratio(F.col("purchases_30d"), F.col("carts_30d")).alias("cart_to_purchase_30d"),
    ).withColumn("top_search_terms_90d", F.coalesce("top_search_terms_90d", F.array().cast("array<string>")))
