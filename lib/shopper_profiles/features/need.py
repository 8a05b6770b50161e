"""Need family: purchase intent signals, price sensitivity, RFM, category affinity, churn.

The ``*_rule`` scores are transparent rules (the traditional profile the model is measured
against), not learned: intent = 0.4 [open cart] + 0.3 min(1, repeat views / 3) + 0.3 [active
in the last 3 days]; churn risk = 0.5 [inactive] + 0.3 [declining frequency] + 0.2 min(1,
days since last event / 60).
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopper_profiles.features import (
    category_median_prices,
    days_ago,
    log_price_ratio,
    price_level,
    ratio,
    share_map,
    top_category,
    within_days,
)

ACTION_WEIGHTS = {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0, "like": 2.0, "share": 2.0, "review": 3.0,
                  "remove_from_cart": 0.5}


def item_price_level(per_item: DataFrame) -> DataFrame:
    """Per user, ``item_price_level_90d``: the geometric mean of each distinct item's price vs its
    category median, shrunk towards 1 by how much evidence the shopper has (empirical Bayes).

    Why: a shopper's price sensitivity shows in which items they choose, so each item counts once
    (ten views of one item are one choice), and a mean over three items is mostly the items' own
    spread. With n items of mean log ratio m, the estimate is exp(m n / (n + k)), k = within-shopper
    variance / between-shopper variance, both estimated from this snapshot's shoppers (method of
    moments: var(m) = tau^2 + sigma^2 E[1/n]) -- nothing tuned per shop. ``per_item``: (user_id,
    ``_lp`` = the item's mean log price ratio, null when unpriced)."""
    per_user = per_item.where(F.col("_lp").isNotNull()).groupBy("user_id").agg(
        F.count("*").alias("_n"), F.avg("_lp").alias("_m"), F.sum(F.col("_lp") * F.col("_lp")).alias("_ss"))
    moments = per_user.agg(
        (F.sum(F.col("_ss") - F.col("_n") * F.col("_m") * F.col("_m")) / F.sum(F.col("_n") - 1)).alias("_within"),
        F.var_pop("_m").alias("_spread"), F.avg(1.0 / F.col("_n")).alias("_inverse_n"))
    between = F.col("_spread") - F.col("_within") * F.col("_inverse_n")
    # No between-shopper variance beyond the sampling noise: every shopper is typical (k infinite).
    k = F.when(between > 0, F.col("_within") / between)
    return per_user.crossJoin(F.broadcast(moments)).select(
        "user_id", F.exp(F.coalesce(F.col("_m") * F.col("_n") / (F.col("_n") + k), F.lit(0.0))).alias("item_price_level_90d"))


def need_features(events_cut: DataFrame, items: DataFrame, as_of: date, half_life_days: float,
                  inactive_days: int) -> DataFrame:
    """Four passes over the cut (per-category medians; one conditional aggregation per shopper;
    repeat views and item price levels at the (shopper, item) grain; category affinity), not one per
    signal: each pass over bronze costs more than the aggregation it feeds."""
    etype, price = F.col("event_type"), F.col("price")
    in7, in90 = within_days(as_of, 7), within_days(as_of, 90)
    bought = etype == "purchase"
    medians = category_median_prices(events_cut, F.median(F.when(bought, price)).alias("_paid_median"))
    priced = events_cut.join(F.broadcast(medians), "category", "left").join(
        F.broadcast(items.select("item_id", F.col("price").alias("_list_price"))), "item_id", "left")
    bought90 = bought & in90
    per_user = priced.groupBy("user_id").agg(
        F.size(F.array_except(F.collect_set(F.when(in7 & (etype == "add_to_cart"), F.col("item_id"))),
                              F.collect_set(F.when(in7 & bought, F.col("item_id"))))).alias("carts_without_purchase_7d"),
        F.sum(F.when(in7 & (etype == "view"), 1).otherwise(0)).alias("_views"),
        F.sum(F.when(in7 & (etype == "search"), 1).otherwise(0)).alias("_searches"),
        F.avg(F.when(bought90, ratio(price, F.col("_paid_median")))).alias("paid_vs_category_median_90d"),
        F.avg(F.when(bought90 & F.col("_list_price").isNotNull(),
                     (price < 0.95 * F.col("_list_price")).cast("double"))).alias("discount_share_90d"),
        F.size(F.collect_set(F.when(bought90, F.col("session_id")))).alias("frequency_90d"),
        F.round(F.sum(F.when(bought90, price * F.col("quantity"))), 2).alias("monetary_90d"),
        # The price level of everything looked at, carted and bought vs the category's median price:
        # price sensitivity acts when shoppers choose among items, long before the few purchases.
        price_level(F.when(in90 & (price > 0), price), F.col("_median")).alias("browsed_vs_category_median_90d"),
        F.min(F.when(bought, days_ago(F.col("ts"), as_of))).alias("recency_days"),
        F.min(days_ago(F.col("ts"), as_of)).alias("days_since_last_event"),
        F.sum(F.when(within_days(as_of, 30), 1).otherwise(0)).cast("long").alias("events_30d"),
        F.sum(F.when(within_days(as_of, 60) & ~within_days(as_of, 30), 1).otherwise(0)).cast("long").alias("events_prev_30d"),
    ).withColumn("snapshot_date", F.lit(as_of))  # every shopper of the cut: the population
    per_item = priced.where(in90 & F.col("item_id").isNotNull()).groupBy("user_id", "item_id").agg(
        F.sum(F.when(in7 & (etype == "view"), 1).otherwise(0)).alias("_views_7d"),
        F.avg(F.when(price > 0, log_price_ratio(price, F.col("_median")))).alias("_lp"))
    repeats = per_item.where("_views_7d >= 2").groupBy("user_id").agg(F.count("*").alias("repeat_views_7d"))

    weights = F.create_map(*[x for k, v in ACTION_WEIGHTS.items() for x in (F.lit(k), F.lit(v))])
    decay = F.pow(F.lit(0.5), days_ago(F.col("ts"), as_of) / half_life_days)
    scored = (events_cut.where(in90 & F.col("item_id").isNotNull())
              .withColumn("top", top_category(F.col("category")))
              .withColumn("w", F.coalesce(weights[etype], F.lit(0.0)) * decay)
              .groupBy("user_id", "top").agg(F.sum("w").alias("w")))
    affinity = share_map(scored, "top", "w").withColumnRenamed("shares", "category_affinity_90d")

    frame = per_user.join(repeats, "user_id", "left").join(item_price_level(per_item), "user_id", "left").join(
        affinity, "user_id", "left")
    frame = frame.select(
        "user_id", "snapshot_date",
        F.coalesce("carts_without_purchase_7d", F.lit(0)).alias("carts_without_purchase_7d"),
        F.coalesce("repeat_views_7d", F.lit(0)).cast("long").alias("repeat_views_7d"),
        ratio(F.col("_searches"), F.col("_views")).alias("search_to_view_ratio_7d"),
        "paid_vs_category_median_90d", "browsed_vs_category_median_90d",
        F.coalesce("item_price_level_90d", F.lit(1.0)).alias("item_price_level_90d"), "discount_share_90d", "recency_days",
        F.coalesce("frequency_90d", F.lit(0)).cast("long").alias("frequency_90d"),
        F.coalesce("monetary_90d", F.lit(0.0)).alias("monetary_90d"),
        "category_affinity_90d", "days_since_last_event", "events_30d", "events_prev_30d",
    )
    frame = frame.withColumn("activity_trend", (F.col("events_30d") + 1.0) / (F.col("events_prev_30d") + 1.0))
    frame = frame.withColumn("inactive", F.col("days_since_last_event") >= inactive_days)
    frame = frame.withColumn("declining_frequency", F.col("activity_trend") < 0.5)
    frame = frame.withColumn("purchase_intent_rule", F.round(
        0.4 * (F.col("carts_without_purchase_7d") > 0).cast("double")
        + 0.3 * F.least(F.lit(1.0), F.col("repeat_views_7d") / 3.0)
        + 0.3 * (F.col("days_since_last_event") <= 3).cast("double"), 6))
    frame = frame.withColumn("churn_risk_rule", F.round(
        0.5 * F.col("inactive").cast("double") + 0.3 * F.col("declining_frequency").cast("double")
        + 0.2 * F.least(F.lit(1.0), F.col("days_since_last_event") / 60.0), 6))
    return _rfm_scores(frame)


def _rfm_scores(frame: DataFrame) -> DataFrame:
    """Quintile scores 1-5 among buyers (5 = most recent / frequent / valuable); 0 for non-buyers."""
    buyers = frame.where(F.col("recency_days").isNotNull())
    order = {"r_score": F.desc("recency_days"), "f_score": F.asc("frequency_90d"), "m_score": F.asc("monetary_90d")}
    for name, key in order.items():
        buyers = buyers.withColumn(name, F.ntile(5).over(Window.orderBy(key, "user_id")))
    scores = buyers.select("user_id", "r_score", "f_score", "m_score")
    frame = frame.join(scores, "user_id", "left")
    for name in order:
        frame = frame.withColumn(name, F.coalesce(F.col(name), F.lit(0)).cast("int"))
    return frame.withColumn("rfm_segment", F.concat(*[F.col(n).cast("string") for n in order]))
