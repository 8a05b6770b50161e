"""The canonical bronze schema, declared once, and the raw landing contract sources deliver.

Every source (simulator, UCI Online Retail, Amazon Beauty) lands rows as *strings* under the
canonical column names (``RAW_COLUMNS``) plus ``raw_row`` (the untouched source record as
JSON); validation parses and types them into the bronze tables below.
"""

from __future__ import annotations

from pyspark.sql import types as T

from shopper_profiles.storage import TableSpec

EVENT_TYPES = (
    "view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "return",
    "like",
    "share",
    "review",
    "follow",
)
"""``return`` carries UCI cancellations (invoice ``C...``); the rest are the card's event types."""

ITEM_EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "return", "like", "share", "review")
PRICED_EVENT_TYPES = ("add_to_cart", "remove_from_cart", "purchase", "return")
SOCIAL_EDGE_TYPES = ("friend", "follow")
DEVICES = ("mobile", "desktop", "tablet", "app", "unknown")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS = ("female", "male", "other")

EVENTS = TableSpec(
    "events",
    T.StructType(
        [
            T.StructField("event_id", T.StringType(), False),
            T.StructField("user_id", T.StringType(), False),  # pseudonym, never the raw id
            T.StructField("ts", T.TimestampType(), False),
            T.StructField("event_date", T.DateType(), False),
            T.StructField("event_type", T.StringType(), False),
            T.StructField("item_id", T.StringType(), True),
            T.StructField("category", T.StringType(), True),
            T.StructField("price", T.DoubleType(), True),
            T.StructField("quantity", T.IntegerType(), True),
            T.StructField("query", T.StringType(), True),
            T.StructField("session_id", T.StringType(), True),
            T.StructField("device", T.StringType(), True),
            T.StructField("source", T.StringType(), False),
            T.StructField("load_id", T.StringType(), False),
        ]
    ),
    partition_by=("event_date",),
    keys=("event_id",),
    description="Bronze behaviour events, validated, deduplicated and pseudonymised.",
)

USERS = TableSpec(
    "users",
    T.StructType(
        [
            T.StructField("user_id", T.StringType(), False),
            T.StructField("age_band", T.StringType(), True),
            T.StructField("gender", T.StringType(), True),
            T.StructField("city", T.StringType(), True),
            T.StructField("country", T.StringType(), True),
            T.StructField("signup_date", T.DateType(), True),
            T.StructField("device", T.StringType(), True),
            T.StructField("source", T.StringType(), False),
            T.StructField("load_id", T.StringType(), False),
        ]
    ),
    keys=("user_id",),
    description="Bronze basic user attributes (latest known per user).",
)

ITEMS = TableSpec(
    "items",
    T.StructType(
        [
            T.StructField("item_id", T.StringType(), False),
            T.StructField("title", T.StringType(), True),
            T.StructField("category_path", T.StringType(), True),  # "top > sub > leaf"
            T.StructField("brand", T.StringType(), True),
            T.StructField("price", T.DoubleType(), True),
            T.StructField("attributes", T.ArrayType(T.StringType()), True),
            T.StructField("source", T.StringType(), False),
            T.StructField("load_id", T.StringType(), False),
        ]
    ),
    keys=("item_id",),
    description="Bronze item catalogue (title text feeds the pretrained text encoder).",
)

SOCIAL_EDGES = TableSpec(
    "social_edges",
    T.StructType(
        [
            T.StructField("src_user_id", T.StringType(), False),
            T.StructField("dst_user_id", T.StringType(), False),
            T.StructField("edge_type", T.StringType(), False),
            T.StructField("ts", T.TimestampType(), True),
            T.StructField("source", T.StringType(), False),
            T.StructField("load_id", T.StringType(), False),
        ]
    ),
    keys=("src_user_id", "dst_user_id", "edge_type"),
    description="Bronze social graph edges (friend, follow).",
)

QUARANTINE = TableSpec(
    "quarantine",
    T.StructType(
        [
            T.StructField("load_id", T.StringType(), False),
            T.StructField("entity", T.StringType(), False),
            T.StructField("rule", T.StringType(), False),
            T.StructField("detail", T.StringType(), True),
            T.StructField("raw_row", T.StringType(), True),
            T.StructField("source", T.StringType(), False),
            T.StructField("quarantined_at", T.TimestampType(), False),
        ]
    ),
    partition_by=("load_id",),
    description="Rows that failed a validation rule, with the rule and the raw row; nothing is lost.",
)

INGEST_LOADS = TableSpec(
    "ingest_loads",
    T.StructType(
        [
            T.StructField("load_id", T.StringType(), False),
            T.StructField("source", T.StringType(), False),
            T.StructField("entity", T.StringType(), False),
            T.StructField("window_start", T.DateType(), True),
            T.StructField("window_end", T.DateType(), True),
            T.StructField("input_rows", T.LongType(), False),
            T.StructField("accepted_rows", T.LongType(), False),
            T.StructField("quarantined_rows", T.LongType(), False),
            T.StructField("duplicate_rows", T.LongType(), False),
            T.StructField("already_loaded_rows", T.LongType(), False),
            T.StructField("new_rows", T.LongType(), False),
            T.StructField("loaded_at", T.TimestampType(), False),
        ]
    ),
    keys=("load_id", "entity"),
    description="One row per load and entity: the reconciliation input = accepted + quarantined + duplicates.",
)

USER_ID_MAP = TableSpec(
    "user_id_map",
    T.StructType(
        [
            T.StructField("user_id", T.StringType(), False),
            T.StructField("raw_user_id", T.StringType(), False),
            T.StructField("source", T.StringType(), False),
            T.StructField("first_load_id", T.StringType(), False),
        ]
    ),
    keys=("user_id", "source"),
    description="RESTRICTED: pseudonym -> raw id. Erasure deletes the row to break the link.",
)

ERASURES = TableSpec(
    "erasures",
    T.StructType(
        [
            T.StructField("erasure_token", T.StringType(), False),  # keyed hash: never the raw id or the pseudonym
            T.StructField("source", T.StringType(), False),
            T.StructField("request_id", T.StringType(), False),
            T.StructField("erased_at", T.TimestampType(), False),
        ]
    ),
    keys=("erasure_token", "source"),
    description="RESTRICTED: shoppers erased on request (keyed tokens only); ingestion refuses their rows.",
)

PLANTED_TRUTH = TableSpec(
    "planted_truth",
    T.StructType(
        [
            T.StructField("user_id", T.StringType(), False),
            T.StructField("top_interests", T.ArrayType(T.StringType()), False),
            T.StructField("interest_weights", T.ArrayType(T.DoubleType()), False),
            T.StructField("price_sensitivity", T.DoubleType(), False),
            T.StructField("purchase_propensity", T.DoubleType(), False),
            T.StructField("churn_ts", T.TimestampType(), True),
            T.StructField("age_band", T.StringType(), False),
            T.StructField("gender", T.StringType(), False),
            T.StructField("churned", T.BooleanType(), False),
            T.StructField("truth_cutoff", T.DateType(), False),
            T.StructField("will_purchase_next_window", T.BooleanType(), False),
            T.StructField("seed", T.LongType(), False),
            T.StructField("interest_drift_ts", T.TimestampType(), True),  # the third interest gave way here
            T.StructField("drifted_to", T.StringType(), True),  # ... to this category
            T.StructField("interests_before_drift", T.ArrayType(T.StringType()), True),  # top interests until then
        ]
    ),
    keys=("user_id",),
    description="RESTRICTED simulator truth for evaluation only; training never reads it.",
)

RAW_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("event_id", "user_id", "ts", "event_type", "item_id", "category", "price", "quantity",
               "query", "session_id", "device"),
    "users": ("user_id", "age_band", "gender", "city", "country", "signup_date", "device"),
    "items": ("item_id", "title", "category_path", "brand", "price", "attributes"),
    "social_edges": ("src_user_id", "dst_user_id", "edge_type", "ts"),
}
"""Columns a source must deliver per entity (all strings; ``attributes`` is a JSON list)."""

INGEST_TABLES = (EVENTS, USERS, ITEMS, SOCIAL_EDGES, QUARANTINE, INGEST_LOADS, USER_ID_MAP, PLANTED_TRUTH, ERASURES)
"""Every table ingestion writes or reads (bronze and restricted)."""

BRONZE_TABLES = {"events": EVENTS, "users": USERS, "items": ITEMS, "social_edges": SOCIAL_EDGES}
