"""Feature table schemas, declared once (windows come from config: ``features.windows_days``)."""

from __future__ import annotations

from pyspark.sql import types as T

from shopper_profiles.config import FeaturesConfig
from shopper_profiles.storage import TableSpec

KEYS = [T.StructField("user_id", T.StringType(), False), T.StructField("snapshot_date", T.DateType(), False)]
ACTIONS = {"views": "view", "searches": "search", "carts": "add_to_cart", "purchases": "purchase"}


def _f(name: str, dtype: T.DataType) -> T.StructField:
    return T.StructField(name, dtype, True)


def _spec(name: str, fields: list[T.StructField], description: str) -> TableSpec:
    return TableSpec(name, T.StructType(KEYS + fields), partition_by=("snapshot_date",),
                     keys=("user_id", "snapshot_date"), description=description)


def basic_spec() -> TableSpec:
    fields = []
    for column in ("age_band", "gender", "country", "city", "primary_device"):
        fields += [_f(column, T.StringType()), _f(f"{column}_imputed", T.BooleanType())]
    fields += [_f("signup_date", T.DateType()), _f("signup_date_imputed", T.BooleanType()),
               _f("tenure_days", T.IntegerType())]
    return _spec("features_basic", fields, "Basic attributes; missing values filled by stated rules, *_imputed flags.")


def behaviour_spec(cfg: FeaturesConfig) -> TableSpec:
    fields = []
    for days in cfg.windows_days:
        fields += [_f(f"{name}_{days}d", T.LongType()) for name in ACTIONS]
        fields += [_f(f"spend_{days}d", T.DoubleType()), _f(f"sessions_{days}d", T.LongType())]
    fields += [
        _f("avg_session_seconds_30d", T.DoubleType()),
        _f("cart_rate_30d", T.DoubleType()), _f("purchase_rate_30d", T.DoubleType()),
        _f("cart_to_purchase_30d", T.DoubleType()),
        _f("category_share_90d", T.MapType(T.StringType(), T.DoubleType())),
        _f("brand_share_90d", T.MapType(T.StringType(), T.DoubleType())),
        _f("top_search_terms_90d", T.ArrayType(T.StringType())),
    ]
    fields += [_f(f"days_since_last_{name}", T.DoubleType()) for name in ("view", "search", "cart", "purchase")]
    return _spec("features_behaviour", fields, "Behaviour counts, sessions, conversion, distributions, recency.")


def need_spec() -> TableSpec:
    fields = [
        _f("carts_without_purchase_7d", T.IntegerType()), _f("repeat_views_7d", T.LongType()),
        _f("search_to_view_ratio_7d", T.DoubleType()), _f("purchase_intent_rule", T.DoubleType()),
        _f("paid_vs_category_median_90d", T.DoubleType()), _f("browsed_vs_category_median_90d", T.DoubleType()),
        _f("item_price_level_90d", T.DoubleType()), _f("discount_share_90d", T.DoubleType()),
        _f("recency_days", T.DoubleType()), _f("frequency_90d", T.LongType()), _f("monetary_90d", T.DoubleType()),
        _f("r_score", T.IntegerType()), _f("f_score", T.IntegerType()), _f("m_score", T.IntegerType()),
        _f("rfm_segment", T.StringType()),
        _f("category_affinity_90d", T.MapType(T.StringType(), T.DoubleType())),
        _f("days_since_last_event", T.DoubleType()), _f("events_30d", T.LongType()), _f("events_prev_30d", T.LongType()),
        _f("activity_trend", T.DoubleType()), _f("inactive", T.BooleanType()), _f("declining_frequency", T.BooleanType()),
        _f("churn_risk_rule", T.DoubleType()),
    ]
    return _spec("features_need", fields, "Purchase intent, price sensitivity, RFM, category affinity, churn indicators.")


def social_spec() -> TableSpec:
    fields = [
        _f("friends_count", T.LongType()), _f("following_count", T.LongType()), _f("followers_count", T.LongType()),
        _f("likes_given_90d", T.LongType()), _f("shares_given_90d", T.LongType()), _f("reviews_given_90d", T.LongType()),
        _f("likes_received_90d", T.LongType()), _f("shares_received_90d", T.LongType()),
        _f("reviews_received_90d", T.LongType()),
        _f("shares_adopted_90d", T.LongType()), _f("influence_score", T.DoubleType()),
        _f("neighbour_category_affinity", T.MapType(T.StringType(), T.DoubleType())),
    ]
    return _spec("features_social", fields, "Graph degree, social actions, adoption of shares, neighbours' interests.")


def sequences_spec() -> TableSpec:
    fields = [
        _f("item_ids", T.ArrayType(T.StringType())), _f("event_types", T.ArrayType(T.StringType())),
        _f("event_ts", T.ArrayType(T.TimestampType())), _f("categories", T.ArrayType(T.StringType())),
        _f("sequence_length", T.IntegerType()), _f("event_ids", T.ArrayType(T.StringType())),
    ]
    return _spec("behaviour_sequences", fields, "Each user's last N events before the snapshot, oldest first.")


FEATURE_SNAPSHOTS = TableSpec(
    "feature_snapshots",
    T.StructType([
        T.StructField("snapshot_date", T.DateType(), False), T.StructField("table_name", T.StringType(), False),
        T.StructField("version", T.LongType(), False), T.StructField("built_at", T.TimestampType(), False),
    ]),
    keys=("snapshot_date", "table_name"),
    description="The manifest of complete feature snapshots: per snapshot and table, the Delta version its build "
                "committed. Written last, in one commit: readers see a snapshot whole or not at all.",
)


def stats_spec() -> TableSpec:
    return TableSpec(
        "feature_stats",
        T.StructType([
            T.StructField("table_name", T.StringType(), False), T.StructField("snapshot_date", T.DateType(), False),
            T.StructField("feature", T.StringType(), False), _f("rows", T.LongType()), _f("nulls", T.LongType()),
            _f("mean", T.DoubleType()), _f("stddev", T.DoubleType()), _f("min", T.DoubleType()),
            _f("p50", T.DoubleType()), _f("max", T.DoubleType()),
        ]),
        partition_by=("table_name", "snapshot_date"), keys=("table_name", "snapshot_date", "feature"),
        description="Summary statistics per feature and snapshot (for drift plots).",
    )


def feature_specs(cfg: FeaturesConfig) -> dict[str, TableSpec]:
    return {"basic": basic_spec(), "behaviour": behaviour_spec(cfg), "need": need_spec(), "social": social_spec(),
            "sequences": sequences_spec()}
