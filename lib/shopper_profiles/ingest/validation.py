"""Validation of landed rows: pure ``DataFrame -> DataFrame`` transforms.

Each entity has an ordered list of named rules; a row's ``_rule`` is the first rule it breaks
(null when it passes), ``_detail`` says what was seen. Typing (string -> timestamp, double,
int) happens here too, so a value of the wrong type becomes a named rule, not a crash.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopper_profiles.config import IngestConfig
from shopper_profiles.ingest.bronze import (
    AGE_BANDS,
    DEVICES,
    EVENT_TYPES,
    GENDERS,
    ITEM_EVENT_TYPES,
    RAW_COLUMNS,
    SOCIAL_EDGE_TYPES,
)


class CorruptInputError(ValueError):
    """An input file cannot be read to its end (truncated, not what its name says)."""


def read_whole_input(read: Callable[[], DataFrame], path: str) -> DataFrame:
    """Read a source file's lines (``read()``), cache them and read them to the end now, before
    anything is created or written: a truncated or corrupt file fails here with a clear message
    instead of half-way through a load."""
    frame: DataFrame | None = None
    try:
        frame = read().cache()
        frame.count()
    except Exception as error:  # noqa: BLE001 - Spark wraps the JVM's EOF/zip/charset errors in several kinds
        if isinstance(error, ValueError) and not hasattr(error, "java_exception"):
            raise  # our own layout errors say what is wrong already
        if frame is not None:
            frame.unpersist()
        java = re.search(r"(java\.[\w.$]+(?:Exception|Error)[^\n]*)", str(error))  # the JVM's own reason
        cause = (java.group(1) if java else str(error).strip().splitlines()[0] if str(error).strip()
                 else type(error).__name__)[:300]
        raise CorruptInputError(f"{path} cannot be read to its end ({cause}); it is truncated or corrupt. Nothing was "
                                "written: fetch the file again (check its size/checksum) and rerun") from error
    return frame


class SchemaDriftError(ValueError):
    """The landed frame lacks canonical columns: nothing is written for this load."""


@dataclass(frozen=True)
class Rule:
    name: str
    broken: Column  # true when the row breaks the rule
    detail: Column


TIMESTAMP_FORMATS = ("yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ssXXX",
                     "yyyy-MM-dd HH:mm:ss.SSSSSS", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "M/d/yyyy H:mm")
# Text that decoding replaced (U+FFFD) or control characters other than tab/newline.
MALFORMED_TEXT = "[\\x{FFFD}\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F]"


def check_columns(frame: DataFrame, entity: str) -> None:
    """Schema drift fails the load before anything is written, naming the missing columns."""
    expected = RAW_COLUMNS[entity]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise SchemaDriftError(
            f"{entity}: the landed data lacks column(s) {missing} (has {frame.columns}); fix the source "
            "adapter or the upstream export, nothing was written"
        )


def as_landed_strings(frame: DataFrame, entity: str) -> DataFrame:
    """A source that typed a column (wrongly or not) is read as text like any other: scalars
    cast to string, nested values as JSON; the rules then judge the text."""
    check_columns(frame, entity)
    types = dict(frame.dtypes)
    columns = []
    for name in frame.columns:
        kind = types[name]
        if name not in RAW_COLUMNS[entity] or kind == "string":
            columns.append(F.col(name))
        elif kind.startswith(("array", "struct", "map")):
            columns.append(F.to_json(F.col(name)).alias(name))
        else:
            columns.append(F.col(name).cast("string").alias(name))
    if "raw_row" not in frame.columns:
        columns.append(F.to_json(F.struct(*[F.col(c) for c in RAW_COLUMNS[entity]])).alias("raw_row"))
    return frame.select(*columns)


def parse_timestamp(column: Column) -> Column:
    text = F.trim(column)
    parsed = [F.to_timestamp(text, fmt) for fmt in TIMESTAMP_FORMATS]
    epoch = F.when(text.rlike(r"^\d{9,10}$"), F.timestamp_seconds(text.cast("long")))
    return F.coalesce(*parsed, epoch)


def _blank(column: Column) -> Column:
    return column.isNull() | (F.trim(column) == "")


def _try_double(column: Column) -> Column:
    """A plain decimal number, else null ("12,50 EUR", "NaN" and "Infinity" are not prices)."""
    return F.when(F.trim(column).rlike(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"), F.trim(column).cast("double"))


def _is_int(column: Column) -> Column:
    return F.trim(column).rlike(r"^[+-]?\d{1,9}$")


def _first_broken(frame: DataFrame, rules: Sequence[Rule]) -> DataFrame:
    rule = F.coalesce(*[F.when(r.broken, F.lit(r.name)) for r in rules])
    detail = F.coalesce(*[F.when(r.broken, r.detail.cast("string")) for r in rules])
    return frame.withColumn("_rule", rule).withColumn("_detail", detail)


def _text_rules(columns: Sequence[str], cfg: IngestConfig) -> list[Rule]:
    rules = []
    for c in columns:
        rules.append(Rule("malformed_unicode", F.col(c).rlike(MALFORMED_TEXT),
                          F.concat(F.lit(f"{c} holds replacement/control characters: "), F.substring(F.col(c), 1, 60))))
    for c in columns:
        rules.append(Rule("oversized_text", F.length(F.col(c)) > cfg.max_text_length,
                          F.format_string(f"{c} has %d characters (max {cfg.max_text_length})", F.length(F.col(c)))))
    return rules


def latest_plausible(cfg: IngestConfig, load_time: datetime) -> Column:
    """Timestamps after the load time plus the clock-skew tolerance are from the future."""
    return F.lit(load_time).cast("timestamp") + F.make_interval(mins=F.lit(cfg.future_tolerance_minutes))


def event_rules(cfg: IngestConfig, load_time: datetime, window: tuple[date, date] | None) -> list[Rule]:
    """The ordered rule list for events (first broken rule wins)."""
    ts = parse_timestamp(F.col("ts"))
    etype = F.lower(F.trim(F.col("event_type")))
    price = _try_double(F.col("price"))
    qty = F.trim(F.col("quantity")).cast("int")
    device = F.lower(F.trim(F.col("device")))
    codes = [c.upper() for c in cfg.non_product_codes]
    needs_quantity = etype.isin("add_to_cart", "remove_from_cart", "purchase", "return")
    future_limit = latest_plausible(cfg, load_time)
    rules = [
        Rule("missing_event_id", _blank(F.col("event_id")), F.lit("event_id is empty")),
        Rule("missing_user_id", _blank(F.col("user_id")), F.lit("user_id is empty")),
        Rule("id_too_long", (F.length("user_id") > cfg.max_id_length) | (F.length("item_id") > cfg.max_id_length)
             | (F.length("event_id") > cfg.max_id_length), F.lit(f"an id is longer than {cfg.max_id_length}")),
        Rule("unknown_event_type", ~F.coalesce(etype.isin(*EVENT_TYPES), F.lit(False)),
             F.concat(F.lit("event_type="), F.coalesce(F.col("event_type"), F.lit("NULL")))),
        Rule("unparsable_timestamp", ts.isNull(), F.concat(F.lit("ts="), F.coalesce(F.col("ts"), F.lit("NULL")))),
        Rule("future_timestamp", ts > future_limit, F.concat(F.lit("ts="), F.col("ts"))),
        Rule("implausible_timestamp", ts < F.lit(cfg.earliest_plausible).cast("timestamp"),
             F.concat(F.lit("ts="), F.col("ts"))),
    ]
    if window is not None:
        rules.append(Rule("outside_load_window",
                          (ts < F.lit(window[0]).cast("timestamp")) | (ts >= F.lit(window[1]).cast("timestamp")),
                          F.concat(F.lit(f"ts outside [{window[0]}, {window[1]}): "), F.col("ts"))))
    rules += [
        Rule("missing_item_id", etype.isin(*ITEM_EVENT_TYPES) & _blank(F.col("item_id")),
             F.concat(F.lit("no item_id on a "), etype, F.lit(" event"))),
        Rule("non_product_code", F.upper(F.trim(F.col("item_id"))).isin(*codes),
             F.concat(F.lit("item_id="), F.col("item_id"))),
        Rule("search_without_query", (etype == "search") & _blank(F.col("query")), F.lit("search with empty query")),
        Rule("price_not_numeric", ~_blank(F.col("price")) & (price.isNull() | F.isnan(price)),
             F.concat(F.lit("price="), F.col("price"))),
        Rule("negative_price", price < 0, F.concat(F.lit("price="), F.col("price"))),
        Rule("absurd_price", price > cfg.max_price, F.concat(F.lit(f"price above {cfg.max_price}: "), F.col("price"))),
        Rule("zero_price_sale", etype.isin("purchase", "return") & (price == 0),
             F.lit("purchase or return at price 0 (an adjustment, not a sale)")),
        Rule("quantity_not_integer", ~_blank(F.col("quantity")) & ~_is_int(F.col("quantity")),
             F.concat(F.lit("quantity="), F.col("quantity"))),
        Rule("non_positive_quantity", needs_quantity & (qty <= 0), F.concat(F.lit("quantity="), F.col("quantity"))),
        Rule("absurd_quantity", qty > cfg.max_quantity, F.concat(F.lit(f"quantity above {cfg.max_quantity}: "),
                                                                 F.col("quantity"))),
        Rule("unknown_device", ~_blank(F.col("device")) & ~device.isin(*DEVICES),
             F.concat(F.lit("device="), F.col("device"))),
    ]
    return rules + _text_rules(("query", "category", "session_id"), cfg)


def validate_events(
    raw: DataFrame, cfg: IngestConfig, load_time: datetime, window: tuple[date, date] | None = None
) -> DataFrame:
    """Raw event strings -> typed events with ``_rule``/``_detail`` (null rule = valid).

    Missing values are cleaned by stated rules rather than rejected: a blank device becomes
    ``unknown``, a missing quantity on a priced action becomes 1.
    """
    raw = as_landed_strings(raw, "events")
    flagged = _first_broken(raw, event_rules(cfg, load_time, window))
    ts = parse_timestamp(F.col("ts"))
    etype = F.lower(F.trim(F.col("event_type")))
    needs_quantity = etype.isin("add_to_cart", "remove_from_cart", "purchase", "return")
    quantity = F.when(_is_int(F.col("quantity")), F.trim(F.col("quantity")).cast("int"))
    return flagged.select(
        F.trim(F.col("event_id")).alias("event_id"),
        F.trim(F.col("user_id")).alias("raw_user_id"),
        ts.alias("ts"),
        F.to_date(ts).alias("event_date"),
        etype.alias("event_type"),
        F.when(~_blank(F.col("item_id")), F.trim(F.col("item_id"))).alias("item_id"),
        F.when(~_blank(F.col("category")), F.trim(F.col("category"))).alias("category"),
        _try_double(F.col("price")).alias("price"),
        F.when(needs_quantity, F.coalesce(quantity, F.lit(1))).otherwise(quantity).alias("quantity"),
        F.when(~_blank(F.col("query")), F.trim(F.col("query"))).alias("query"),
        F.when(~_blank(F.col("session_id")), F.trim(F.col("session_id"))).alias("session_id"),
        F.coalesce(F.when(~_blank(F.col("device")), F.lower(F.trim(F.col("device")))), F.lit("unknown")).alias("device"),
        "raw_row", "_rule", "_detail",
    )


CONTENT_COLUMNS = ("raw_user_id", "ts", "event_type", "item_id", "category", "price", "quantity", "query",
                   "session_id", "device")


NEAR_DUPLICATE_KEY = ("raw_user_id", "event_type", "item_id", "price", "quantity", "query")
"""Events that differ only in time (and session/device/category text) within ``near_seconds``."""


def mark_duplicates(flagged: DataFrame, near_seconds: int,
                    persist: Callable[[DataFrame], DataFrame] = lambda frame: frame) -> DataFrame:
    """Every flagged event, with ``_duplicate`` and the ``near_duplicate`` rule, judged over the
    rows that broke no rule (the others pass through unmarked), in this order:

    1. exact copies -- the same content under any event id: the smallest event id survives;
    2. near copies -- the same shopper, action, item, price, quantity and query within
       ``near_seconds`` of the previous surviving one: quarantined as ``near_duplicate``;
    3. reused event ids -- one id on different content: the earliest content (then the smallest
       content hash) keeps it, the other contents are duplicates.

    ``raw_row`` is kept only on rows with a rule: the quarantine is its only reader. Why this
    shape: one shuffle of the wide rows (by shopper, which both window keys contain) serves steps
    1 and 2, and each window sorts on a 64-bit hash of its key first (the key's columns follow, so
    equality stays exact); step 3 groups only ids, times and hashes of ``persist``'s copy of
    steps 1-2 (a cache, in ingestion) and broadcasts the few reused ids back. Three windows with
    three shuffles took 2.2x as long at 1.2 M events (docs/BENCHMARKS.md)."""
    ok = F.col("_rule").isNull()
    copies = Window.partitionBy("_content", *CONTENT_COLUMNS).orderBy("event_id")
    marked = (flagged.repartition("raw_user_id").withColumn("_content", F.xxhash64(*CONTENT_COLUMNS))
              .withColumn("_duplicate", ok & (F.row_number().over(copies) > 1)))
    live = ok & ~F.col("_duplicate")
    near_window = Window.partitionBy(F.xxhash64(*NEAR_DUPLICATE_KEY), *NEAR_DUPLICATE_KEY, live).orderBy("ts", "event_id")
    previous_ts = F.lag("ts").over(near_window)
    near = live & previous_ts.isNotNull() & (F.unix_timestamp("ts") - F.unix_timestamp(previous_ts) <= near_seconds)
    marked = marked.withColumn("_near_of", F.when(near, F.lag("event_id").over(near_window)))
    is_near = F.col("_near_of").isNotNull()
    rule = F.when(is_near, F.lit("near_duplicate")).otherwise(F.col("_rule"))
    marked = persist(marked.select(
        *[c for c in flagged.columns if c not in ("_rule", "_detail", "raw_row")],
        F.when(rule.isNotNull(), F.col("raw_row")).alias("raw_row"), rule.alias("_rule"),
        F.when(is_near, F.concat(F.lit(f"within {near_seconds}s of event "), F.col("_near_of"))).otherwise(
            F.col("_detail")).alias("_detail"),
        "_duplicate", "_content"))
    first = F.struct("ts", "_content")
    reused = persist(marked.where(F.col("_rule").isNull()).groupBy("event_id")
                     .agg(F.min(first).alias("_first"), F.max(first).alias("_last"))
                     .where(F.col("_first") != F.col("_last")).select("event_id", "_first"))
    later = F.col("_rule").isNull() & F.col("_first").isNotNull() & (first != F.col("_first"))
    return (marked.join(F.broadcast(reused), "event_id", "left")
            .select(*flagged.columns, (F.col("_duplicate") | later).alias("_duplicate")))


def user_rules(cfg: IngestConfig, load_time: datetime) -> list[Rule]:
    signup = F.to_date(F.trim(F.col("signup_date")))
    rules = [
        Rule("missing_user_id", _blank(F.col("user_id")), F.lit("user_id is empty")),
        Rule("id_too_long", F.length("user_id") > cfg.max_id_length, F.lit(f"user_id longer than {cfg.max_id_length}")),
        Rule("unknown_age_band", ~_blank(F.col("age_band")) & ~F.trim(F.col("age_band")).isin(*AGE_BANDS),
             F.concat(F.lit("age_band="), F.col("age_band"))),
        Rule("unknown_gender", ~_blank(F.col("gender")) & ~F.lower(F.trim(F.col("gender"))).isin(*GENDERS),
             F.concat(F.lit("gender="), F.col("gender"))),
        Rule("unparsable_date", ~_blank(F.col("signup_date")) & signup.isNull(),
             F.concat(F.lit("signup_date="), F.col("signup_date"))),
        Rule("future_date", signup > F.lit(load_time.date()), F.concat(F.lit("signup_date="), F.col("signup_date"))),
        Rule("unknown_device", ~_blank(F.col("device")) & ~F.lower(F.trim(F.col("device"))).isin(*DEVICES),
             F.concat(F.lit("device="), F.col("device"))),
    ]
    return rules + _text_rules(("city", "country"), cfg)


def validate_users(raw: DataFrame, cfg: IngestConfig, load_time: datetime) -> DataFrame:
    raw = as_landed_strings(raw, "users")
    flagged = _first_broken(raw, user_rules(cfg, load_time))

    def clean(c: str) -> Column:
        return F.when(~_blank(F.col(c)), F.trim(F.col(c)))

    return flagged.select(
        F.trim(F.col("user_id")).alias("raw_user_id"),
        clean("age_band").alias("age_band"),
        F.lower(clean("gender")).alias("gender"),
        clean("city").alias("city"),
        clean("country").alias("country"),
        F.to_date(clean("signup_date")).alias("signup_date"),
        F.coalesce(F.lower(clean("device")), F.lit("unknown")).alias("device"),
        "raw_row", "_rule", "_detail",
    )


def validate_items(raw: DataFrame, cfg: IngestConfig) -> DataFrame:
    raw = as_landed_strings(raw, "items")
    price = _try_double(F.col("price"))
    codes = [c.upper() for c in cfg.non_product_codes]
    rules = [
        Rule("missing_item_id", _blank(F.col("item_id")), F.lit("item_id is empty")),
        Rule("id_too_long", F.length("item_id") > cfg.max_id_length, F.lit(f"item_id longer than {cfg.max_id_length}")),
        Rule("non_product_code", F.upper(F.trim(F.col("item_id"))).isin(*codes), F.concat(F.lit("item_id="), F.col("item_id"))),
        Rule("price_not_numeric", ~_blank(F.col("price")) & (price.isNull() | F.isnan(price)),
             F.concat(F.lit("price="), F.col("price"))),
        Rule("negative_price", price < 0, F.concat(F.lit("price="), F.col("price"))),
        Rule("absurd_price", price > cfg.max_price, F.concat(F.lit("price="), F.col("price"))),
        Rule("attributes_not_json_list", ~_blank(F.col("attributes"))
             & F.from_json(F.col("attributes"), "array<string>").isNull(), F.concat(F.lit("attributes="), F.col("attributes"))),
    ] + _text_rules(("title", "category_path", "brand"), cfg)
    flagged = _first_broken(raw, rules)
    return flagged.select(
        F.trim(F.col("item_id")).alias("item_id"),
        F.when(~_blank(F.col("title")), F.trim(F.col("title"))).alias("title"),
        F.when(~_blank(F.col("category_path")), F.trim(F.col("category_path"))).alias("category_path"),
        F.when(~_blank(F.col("brand")), F.trim(F.col("brand"))).alias("brand"),
        price.alias("price"),
        F.from_json(F.col("attributes"), "array<string>").alias("attributes"),
        "raw_row", "_rule", "_detail",
    )


def validate_social_edges(raw: DataFrame, cfg: IngestConfig, load_time: datetime) -> DataFrame:
    raw = as_landed_strings(raw, "social_edges")
    ts = parse_timestamp(F.col("ts"))
    future_limit = latest_plausible(cfg, load_time)
    rules = [
        Rule("missing_user_id", _blank(F.col("src_user_id")) | _blank(F.col("dst_user_id")), F.lit("an endpoint is empty")),
        Rule("self_edge", F.trim(F.col("src_user_id")) == F.trim(F.col("dst_user_id")), F.lit("src equals dst")),
        Rule("unknown_edge_type", ~F.coalesce(F.lower(F.trim(F.col("edge_type"))).isin(*SOCIAL_EDGE_TYPES), F.lit(False)),
             F.concat(F.lit("edge_type="), F.coalesce(F.col("edge_type"), F.lit("NULL")))),
        Rule("unparsable_timestamp", ~_blank(F.col("ts")) & ts.isNull(), F.concat(F.lit("ts="), F.col("ts"))),
        Rule("future_timestamp", ts > future_limit, F.concat(F.lit("ts="), F.col("ts"))),
    ]
    flagged = _first_broken(raw, rules)
    return flagged.select(
        F.trim(F.col("src_user_id")).alias("raw_src_user_id"),
        F.trim(F.col("dst_user_id")).alias("raw_dst_user_id"),
        F.lower(F.trim(F.col("edge_type"))).alias("edge_type"),
        ts.alias("ts"),
        "raw_row", "_rule", "_detail",
    )
