"""Social family: graph degree, social actions given and received, adoption of the user's shares by their
neighbours (influence), and the neighbours' category interests (one-hop graph aggregation)."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopper_profiles.features import top_category, within_days


def friend_pairs(edges_cut: DataFrame) -> DataFrame:
    """Friend links are undirected: each edge as (user_id, neighbour_id) in both directions."""
    friends = edges_cut.where(F.col("edge_type") == "friend")
    return friends.select(F.col("src_user_id").alias("user_id"), F.col("dst_user_id").alias("neighbour_id")).unionByName(
        friends.select(F.col("dst_user_id").alias("user_id"), F.col("src_user_id").alias("neighbour_id")))


def neighbours(edges_cut: DataFrame) -> DataFrame:
    """Undirected friend links both ways plus the accounts each user follows: (user_id, neighbour_id)."""
    follows = edges_cut.where(F.col("edge_type") == "follow").select(
        F.col("src_user_id").alias("user_id"), F.col("dst_user_id").alias("neighbour_id"))
    return friend_pairs(edges_cut).unionByName(follows).distinct()


def social_features(events_cut: DataFrame, edges_cut: DataFrame, as_of: date) -> DataFrame:
    etype = F.col("event_type")
    friend_counts = friend_pairs(edges_cut).distinct().groupBy("user_id").agg(F.count("*").alias("friends_count"))
    follows = edges_cut.where(F.col("edge_type") == "follow").select("src_user_id", "dst_user_id").distinct()
    following = follows.groupBy(F.col("src_user_id").alias("user_id")).agg(F.count("*").alias("following_count"))
    followers = follows.groupBy(F.col("dst_user_id").alias("user_id")).agg(F.count("*").alias("followers_count"))

    in90 = within_days(as_of, 90)
    last90 = events_cut.where(in90)
    # Every shopper of the cut (the population) with what they gave in the last 90 days: one pass.
    given = events_cut.groupBy("user_id").agg(*[
        F.sum(F.when(in90 & (etype == action), 1).otherwise(0)).cast("long").alias(f"{name}_given_90d")
        for name, action in (("likes", "like"), ("shares", "share"), ("reviews", "review"))
    ]).withColumn("snapshot_date", F.lit(as_of))
    # A share is adopted when a neighbour views or buys the shared item after the share.
    links = neighbours(edges_cut)
    shares = last90.where(etype == "share").select("user_id", "item_id", F.col("ts").alias("shared_at"))
    reactions = last90.where(etype.isin("view", "purchase")).select(
        F.col("user_id").alias("neighbour_id"), "item_id", F.col("ts").alias("reacted_at"))
    adopted = (shares.join(links, "user_id").join(reactions, ["neighbour_id", "item_id"])
               .where(F.col("reacted_at") > F.col("shared_at"))
               .groupBy("user_id").agg(F.countDistinct("neighbour_id", "item_id").alias("shares_adopted_90d")))

    # Engagement received: neighbours liking, sharing or reviewing an item after this user
    # shared, reviewed or liked it (shoppers own no items; their endorsements are what others react to).
    endorsed = last90.where(etype.isin("share", "review", "like")).groupBy("user_id", "item_id").agg(
        F.min("ts").alias("endorsed_at"))
    neighbour_actions = last90.where(etype.isin("like", "share", "review")).select(
        F.col("user_id").alias("neighbour_id"), "item_id", "event_type", F.col("ts").alias("acted_at"))
    received = (endorsed.join(links, "user_id").join(neighbour_actions, ["neighbour_id", "item_id"])
                .where(F.col("acted_at") > F.col("endorsed_at")).groupBy("user_id").agg(*[
                    F.sum(F.when(F.col("event_type") == action, 1).otherwise(0)).alias(f"{name}_received_90d")
                    for name, action in (("likes", "like"), ("shares", "share"), ("reviews", "review"))]))

    interests = (last90.where(F.col("item_id").isNotNull()).groupBy("user_id", top_category(F.col("category")).alias("top"))
                 .count())
    per_user_total = interests.groupBy("user_id").agg(F.sum("count").alias("_total"))
    shares_of = interests.join(per_user_total, "user_id").select(
        F.col("user_id").alias("neighbour_id"), "top", (F.col("count") / F.col("_total")).alias("share"))
    degree = links.groupBy("user_id").agg(F.count("*").alias("_degree"))
    neighbour_mix = (links.join(shares_of, "neighbour_id").groupBy("user_id", "top").agg(F.sum("share").alias("s"))
                     .join(degree, "user_id")
                     .select("user_id", F.struct(F.col("top").alias("k"),
                                                 F.round(F.col("s") / F.col("_degree"), 6).alias("v")).alias("kv"))
                     .groupBy("user_id").agg(F.map_from_entries(F.array_sort(F.collect_list("kv"))).alias("neighbour_category_affinity")))

    frame = given
    for part in (friend_counts, following, followers, received, adopted, neighbour_mix):
        frame = frame.join(part, "user_id", "left")
    counts = ["friends_count", "following_count", "followers_count", "likes_given_90d", "shares_given_90d",
              "reviews_given_90d", "likes_received_90d", "shares_received_90d", "reviews_received_90d",
              "shares_adopted_90d"]
    for column in counts:
        frame = frame.withColumn(column, F.coalesce(F.col(column), F.lit(0)).cast("long"))
    frame = frame.withColumn(
        "influence_score", F.round(F.log1p(F.col("followers_count")) + F.log1p(F.col("shares_adopted_90d")), 6))
    return frame.select("user_id", "snapshot_date", *counts, "influence_score", "neighbour_category_affinity")
