"""The training set: features at snapshot D joined into model-ready arrays, with labels from
the *following* window [D, D + horizon) only, and a deterministic split by user.

Split rule: ``pmod(xxhash64("split-v1", user_id), 10)``: 0-7 train, 8 validation, 9 test -- a
user is in one split for every snapshot, so no user leaks across splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from shopper_profiles.features import (
    as_of_ts,
    category_median_prices,
    events_before,
    events_between,
    price_level,
    top_category,
)
from shopper_profiles.ingest.bronze import AGE_BANDS, EVENT_TYPES, GENDERS
from shopper_profiles.storage import TableSpec

PAD, MASK, FIRST_ITEM = 0, 1, 2
TIME_BUCKETS = 16  # log2(hours before D), 1..16; 0 is padding

TABULAR_FEATURES: tuple[tuple[str, str, float], ...] = (
    # (table column, transform: log1p of counts, log of ratios, id, fill value for nulls)
    ("views_7d", "log1p", 0.0), ("views_30d", "log1p", 0.0), ("views_90d", "log1p", 0.0),
    ("searches_30d", "log1p", 0.0), ("carts_30d", "log1p", 0.0), ("purchases_30d", "log1p", 0.0),
    ("purchases_90d", "log1p", 0.0), ("spend_90d", "log1p", 0.0), ("sessions_30d", "log1p", 0.0),
    ("avg_session_seconds_30d", "log1p", 0.0), ("cart_rate_30d", "id", 0.0), ("purchase_rate_30d", "id", 0.0),
    ("days_since_last_view", "log1p", 365.0), ("days_since_last_purchase", "log1p", 365.0),
    ("carts_without_purchase_7d", "log1p", 0.0), ("repeat_views_7d", "log1p", 0.0),
    ("search_to_view_ratio_7d", "id", 0.0), ("paid_vs_category_median_90d", "id", 1.0),
    ("browsed_vs_category_median_90d", "id", 1.0), ("item_price_level_90d", "log", 1.0),
    ("discount_share_90d", "id", 0.0), ("recency_days", "log1p", 365.0), ("frequency_90d", "log1p", 0.0),
    ("monetary_90d", "log1p", 0.0), ("r_score", "id", 0.0), ("f_score", "id", 0.0), ("m_score", "id", 0.0),
    ("days_since_last_event", "log1p", 365.0), ("events_30d", "log1p", 0.0), ("events_prev_30d", "log1p", 0.0),
    ("activity_trend", "log1p", 1.0), ("friends_count", "log1p", 0.0), ("followers_count", "log1p", 0.0),
    ("following_count", "log1p", 0.0), ("likes_given_90d", "log1p", 0.0), ("shares_given_90d", "log1p", 0.0),
    ("shares_adopted_90d", "log1p", 0.0), ("influence_score", "id", 0.0), ("tenure_days", "log1p", 0.0),
    # The rule profiles' own scores: the model starts from what the rules know and learns the rest.
    ("purchase_intent_rule", "id", 0.0), ("churn_risk_rule", "id", 0.0),
)

# The per-category blocks after TABULAR_FEATURES, in this order (the affinity last: the wide paths
# read it from the end of the vector).
CATEGORY_BLOCKS = ("category_share_90d", "category_affinity_90d")


# The category evidence the interest wide path weighs, in the order of its weights (value, log each).
INTEREST_EVIDENCE = ("category_affinity_90d", "category_share_90d")


def tabular_width(n_categories: int) -> int:
    """The length of ``tabular`` for ``n_categories`` categories."""
    return len(TABULAR_FEATURES) + len(CATEGORY_BLOCKS) * n_categories


def category_block(block: str, n_tabular: int, n_categories: int) -> slice:
    """Where ``block``'s per-category values sit in a ``tabular`` of ``n_tabular`` values: the
    category blocks end the vector in CATEGORY_BLOCKS order (tables without the share block end
    with the affinity alone)."""
    start = n_tabular - (len(CATEGORY_BLOCKS) - CATEGORY_BLOCKS.index(block)) * n_categories
    return slice(start, start + n_categories)


VOCAB = TableSpec(
    "item_vocab",
    T.StructType([T.StructField("snapshot_date", T.DateType(), False), T.StructField("item_id", T.StringType(), False),
                  T.StructField("item_idx", T.IntegerType(), False), T.StructField("title", T.StringType(), True),
                  T.StructField("category", T.StringType(), True), T.StructField("category_idx", T.IntegerType(), True)]),
    partition_by=("snapshot_date",),
    keys=("snapshot_date", "item_id"),
    description="Item id -> token index (0 pad, 1 mask, items from 2) with title and top category, one vocabulary "
                "per training snapshot D (items known before D), so a model and its vocabulary travel together.",
)


def training_spec(max_len: int) -> TableSpec:
    ints = T.ArrayType(T.IntegerType())
    floats = T.ArrayType(T.FloatType())
    fields = [
        T.StructField("user_id", T.StringType(), False), T.StructField("snapshot_date", T.DateType(), False),
        T.StructField("example_date", T.DateType(), False), T.StructField("split", T.StringType(), False),
        T.StructField("item_seq", ints), T.StructField("type_seq", ints), T.StructField("time_seq", ints),
        T.StructField("tabular", floats),
        T.StructField("next_item", T.IntegerType()), T.StructField("next_items", ints), T.StructField("next_basket", ints),
        T.StructField("window_items", ints),
        T.StructField("next_categories", floats), T.StructField("purchase_next", T.FloatType()),
        T.StructField("churn_next", T.FloatType()), T.StructField("price_next", T.FloatType()),
        T.StructField("age_label", T.IntegerType()), T.StructField("gender_label", T.IntegerType()),
        T.StructField("history_items", ints),
    ]
    return TableSpec("training_set", T.StructType(fields), partition_by=("snapshot_date",),
                     keys=("user_id", "snapshot_date", "example_date"),
                     description=f"Model-ready sequences (length {max_len}), tabular features and next-window labels: "
                                 "the training set of snapshot_date T (its vocabulary), one row per shopper and "
                                 "example_date S <= T (features as of S, labels from [S, S + horizon)).")


def split_of(user_id: Column) -> Column:
    bucket = F.pmod(F.xxhash64(F.lit("split-v1"), user_id), F.lit(10))
    return F.when(bucket < 8, "train").when(bucket == 8, "validation").otherwise("test")


def item_vocab(items: DataFrame, events_cut: DataFrame, as_of: date) -> DataFrame:
    """Pure: the vocabulary of snapshot D -- every catalogue item plus any item seen in events
    before D (``events_cut``), indexed in item-id order.

    The catalogue (bronze ``items``) carries no valid-from time, so it is taken as static: an item
    listed there is known at every D (its token is then learnt from its title only). An item's
    category is the catalogue's; for items only seen in events, the category most of its events
    carry (ties: the smallest name), so a rebuild gives the same vocabulary byte for byte.
    """
    counted = events_cut.where(F.col("item_id").isNotNull() & F.col("category").isNotNull()).groupBy(
        "item_id", "category").count()
    modal = Window.partitionBy("item_id").orderBy(F.desc("count"), F.asc("category"))
    seen_category = counted.withColumn("_r", F.row_number().over(modal)).where("_r = 1").select(
        "item_id", F.col("category").alias("ev_cat"))
    seen = events_cut.where(F.col("item_id").isNotNull()).select("item_id").distinct().join(seen_category, "item_id", "left")
    catalogue = items.select("item_id", "title", F.col("category_path").alias("cat"))
    merged = catalogue.join(seen, "item_id", "full").select(
        "item_id", "title", F.when(F.coalesce("cat", "ev_cat").isNotNull(), top_category(F.coalesce("cat", "ev_cat"))).alias("category"))
    categories = merged.where(F.col("category").isNotNull()).select("category").distinct().withColumn(
        "category_idx", (F.row_number().over(Window.orderBy("category")) - 1).cast("int"))
    indexed = merged.withColumn("item_idx", (F.row_number().over(Window.orderBy("item_id")) - 1 + FIRST_ITEM).cast("int"))
    return indexed.join(F.broadcast(categories), "category", "left").select(
        F.lit(as_of).alias("snapshot_date"), "item_id", "item_idx", "title", "category", "category_idx")


def _left_pad(values: Column, length: int, pad: Any = 0) -> Column:
    """Keep the last ``length`` values and pad on the left with ``pad`` to exactly ``length``."""
    tail = F.slice(values, F.greatest(F.lit(1), F.size(values) - length + 1), length)
    return F.concat(F.array_repeat(F.lit(pad), F.lit(length) - F.size(tail)), tail)


def _right_pad(values: Column, length: int, pad: Any = 0) -> Column:
    """Keep the first ``length`` values and pad on the right with ``pad`` to exactly ``length``."""
    head = F.slice(values, 1, length)
    return F.concat(head, F.array_repeat(F.lit(pad), F.lit(length) - F.size(head)))


def sequence_tokens(sequences: DataFrame, vocab: DataFrame, as_of: date, max_len: int) -> DataFrame:
    """Pure: behaviour sequences -> left-padded item / action / log-time tokens per user, the
    event id behind each token (explanations point back at events) and the distinct history items.

    Items the vocabulary does not know (item-less searches, items newer than the model) become
    [MASK]."""
    index = F.broadcast(vocab.select("item_id", "item_idx"))
    type_index = F.create_map(*[x for i, t in enumerate(EVENT_TYPES) for x in (F.lit(t), F.lit(i + 1))])
    steps = sequences.select("user_id", F.posexplode(F.arrays_zip("item_ids", "event_types", "event_ts", "event_ids")).alias(
        "pos", "s"))
    steps = steps.select("user_id", "pos", F.col("s.item_ids").alias("item_id"), F.col("s.event_types").alias("event_type"),
                         F.col("s.event_ts").alias("ts"), F.col("s.event_ids").alias("event_id"))
    hours = (F.unix_timestamp(F.lit(as_of_ts(as_of))) - F.unix_timestamp("ts")) / 3600.0
    bucket = F.least(F.lit(TIME_BUCKETS), F.floor(F.log2(F.lit(1.0) + hours)).cast("int") + 1)
    steps = steps.join(index, "item_id", "left").select(
        "user_id", "pos", F.coalesce("item_idx", F.lit(MASK)).alias("item_idx"),
        F.coalesce(type_index[F.col("event_type")], F.lit(0)).alias("type_idx"), bucket.alias("time_idx"),
        F.coalesce("event_id", F.lit("")).alias("event_id"))
    packed = steps.groupBy("user_id").agg(
        F.array_sort(F.collect_list(F.struct("pos", "item_idx", "type_idx", "time_idx", "event_id"))).alias("p"))
    return packed.select(
        "user_id",
        _left_pad(F.transform("p", lambda s: s["item_idx"]), max_len).alias("item_seq"),
        _left_pad(F.transform("p", lambda s: s["type_idx"]), max_len).alias("type_seq"),
        _left_pad(F.transform("p", lambda s: s["time_idx"]), max_len).alias("time_seq"),
        _left_pad(F.transform("p", lambda s: s["event_id"]), max_len, "").alias("event_id_seq"),
        F.array_distinct(F.filter(F.transform("p", lambda s: s["item_idx"]), lambda i: i >= FIRST_ITEM)).alias("history_items"),
    )


def tabular_inputs(basic: DataFrame, behaviour: DataFrame, need: DataFrame, social: DataFrame,
                   categories: Sequence[str]) -> DataFrame:
    """Pure: the four families of snapshot D -> ``tabular`` = TABULAR_FEATURES, then the behaviour
    family's 90-day category shares, then the need family's category affinity (one value per
    category each, in ``categories`` order), plus the stated (not imputed) demographics as class
    labels (-1 unknown). Both category blocks: the affinity is recent (14-day half-life, weighted
    by action), the share is every item event of 90 days alike -- the longer evidence of which
    categories a shopper keeps coming back to."""
    tab = basic.join(behaviour, ["user_id", "snapshot_date"]).join(need, ["user_id", "snapshot_date"]).join(
        social, ["user_id", "snapshot_date"])
    values = []
    for column, transform, fill in TABULAR_FEATURES:
        value = F.coalesce(F.col(column).cast("double"), F.lit(fill))
        if transform == "log1p":
            value = F.log1p(F.greatest(value, F.lit(0.0)))
        elif transform == "log":  # a positive ratio: 0 = typical
            value = F.log(F.greatest(value, F.lit(1e-6)))
        values.append(value.cast("float"))
    for block in CATEGORY_BLOCKS:
        values += [F.coalesce(F.col(block)[name], F.lit(0.0)).cast("float") for name in categories]
    ages = F.create_map(*[x for i, a in enumerate(AGE_BANDS) for x in (F.lit(a), F.lit(i))])
    genders = F.create_map(*[x for i, g in enumerate(GENDERS) for x in (F.lit(g), F.lit(i))])
    return tab.select(
        "user_id", "snapshot_date", F.array(*values).alias("tabular"),
        F.coalesce(F.when(~F.col("age_band_imputed"), ages[F.col("age_band")]), F.lit(-1)).cast("int").alias("age_label"),
        F.coalesce(F.when(~F.col("gender_imputed"), genders[F.col("gender")]), F.lit(-1)).cast("int").alias("gender_label"),
    )


def model_inputs_frame(sequences: DataFrame, basic: DataFrame, behaviour: DataFrame, need: DataFrame, social: DataFrame,
                       vocab: DataFrame, as_of: date, max_len: int, categories: Sequence[str]) -> DataFrame:
    """Pure: snapshot-D feature rows -> one row of model inputs per user (training and scoring
    build their inputs here, so the two can never drift apart)."""
    return sequence_tokens(sequences, vocab, as_of, max_len).join(
        tabular_inputs(basic, behaviour, need, social, categories), "user_id")


def next_window_labels(events: DataFrame, vocab: DataFrame, as_of: date, horizon_days: int, n_categories: int) -> DataFrame:
    """Pure: events of [D, D + horizon) -> the labels of the users active there (first item,
    items touched, the basket of items bought, categories, purchase flag, price level of the priced
    events vs the category's median price before D; ``_window``: the items in order of first touch)."""
    future = events_between(events, as_of, as_of + timedelta(days=horizon_days))
    medians = category_median_prices(events_before(events, as_of))
    future = future.join(F.broadcast(vocab.select("item_id", "item_idx", "category_idx")), "item_id", "left").join(
        F.broadcast(medians), "category", "left")
    first_item = Window.partitionBy("user_id").orderBy("ts", "event_id")
    with_order = future.where(F.col("item_idx").isNotNull()).withColumn("_r", F.row_number().over(first_item))
    next_item = with_order.where("_r = 1").select("user_id", F.col("item_idx").alias("next_item"))
    labels = future.groupBy("user_id").agg(
        F.array_distinct(F.collect_list(F.col("item_idx"))).alias("next_items"),
        # The window's items in order of first touch (ties by event id): a deterministic prefix.
        F.array_distinct(F.transform(F.array_sort(F.collect_list(F.when(F.col("item_idx").isNotNull(), F.struct(
            "ts", "event_id", "item_idx")))), lambda e: e["item_idx"])).alias("_window"),
        F.array_sort(F.array_distinct(F.collect_list(F.when(F.col("event_type") == "purchase", F.col("item_idx")))))
        .alias("next_basket"),
        F.collect_set("category_idx").alias("_cats"),
        F.max((F.col("event_type") == "purchase").cast("float")).alias("purchase_next"),
        # Price level of everything the shopper looks at, carts and buys (not only the few purchases:
        # more evidence per shopper, and choosing among items is where price sensitivity acts).
        price_level(F.col("price"), F.col("_median")).cast("float").alias("price_next"),
    )
    multi_hot = F.transform(F.sequence(F.lit(0), F.lit(n_categories - 1)),
                            lambda i: F.array_contains(F.col("_cats"), i).cast("float"))
    return labels.join(next_item, "user_id", "left").select(
        "user_id", "next_item", "next_items", "next_basket", multi_hot.alias("next_categories"), "purchase_next",
        "price_next", "_window")


def training_examples(
    sequences: DataFrame, basic: DataFrame, behaviour: DataFrame, need: DataFrame, social: DataFrame,
    events: DataFrame, vocab: DataFrame, as_of: date, horizon_days: int, max_len: int, categories: Sequence[str],
) -> DataFrame:
    """Pure: snapshot-D feature rows + events in [D, D+horizon) -> one model-ready row per user.
    ``categories`` (by ``category_idx``) lay the category blocks out after the scalar features:
    ``tabular`` = TABULAR_FEATURES then one value per category and CATEGORY_BLOCKS entry."""
    n_categories = len(categories)
    inputs = model_inputs_frame(sequences, basic, behaviour, need, social, vocab, as_of, max_len, categories)
    labels = next_window_labels(events, vocab, as_of, horizon_days, n_categories)
    frame = inputs.join(labels, "user_id", "left")
    return frame.select(
        "user_id", F.lit(as_of).alias("snapshot_date"), F.lit(as_of).alias("example_date"),
        split_of(F.col("user_id")).alias("split"),
        "item_seq", "type_seq", "time_seq", "tabular",
        F.coalesce("next_item", F.lit(-1)).alias("next_item"),
        F.coalesce("next_items", F.array().cast("array<int>")).alias("next_items"),
        F.coalesce("next_basket", F.array().cast("array<int>")).alias("next_basket"),
        _right_pad(F.coalesce("_window", F.array().cast("array<int>")), max_len).alias("window_items"),
        F.coalesce("next_categories", F.array_repeat(F.lit(0.0).cast("float"), n_categories)).alias("next_categories"),
        F.coalesce("purchase_next", F.lit(0.0)).cast("float").alias("purchase_next"),
        F.col("next_categories").isNull().cast("float").alias("churn_next"),  # no event at all in the next window
        "price_next", "age_label", "gender_label", "history_items",
    )


def tabular_names(categories: Sequence[str] = ()) -> Sequence[str]:
    """The names of ``tabular``'s entries: the scalar features, then (given the categories) one
    ``block[category]`` per category block."""
    return [*(name for name, _, _ in TABULAR_FEATURES), *(f"{block}[{c}]" for block in CATEGORY_BLOCKS for c in categories)]
