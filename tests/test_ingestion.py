"""Bronze ingestion: every bad-input kind lands in quarantine with its rule, nothing is lost,
raw ids never reach bronze, and reruns change nothing."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from shopper_profiles.config import Config, load_config
from shopper_profiles.ingest.bronze import EVENTS, INGEST_LOADS, QUARANTINE, RAW_COLUMNS, USER_ID_MAP, USERS
from shopper_profiles.ingest.load import Ingestion, make_load_id
from shopper_profiles.ingest.pseudonym import pseudonym
from shopper_profiles.ingest.simulator import RawBatch
from shopper_profiles.ingest.validation import SchemaDriftError
from shopper_profiles.storage import DeltaStore, open_store

LOAD_TIME = datetime(2024, 3, 1, 12, 0, 0)
WINDOW = (date(2024, 2, 1), date(2024, 3, 1))
KEY = "test-key-not-secret"


def clean(case: str, **overrides: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = {
        "event_id": f"e-{case}", "user_id": "alice", "ts": "2024-02-10 10:00:00", "event_type": "purchase",
        "item_id": "85123A", "category": "home > decor", "price": "2.55", "quantity": "6", "query": None,
        "session_id": case, "device": "mobile",
    }
    row.update(overrides)
    return row


# case (also the row's session_id) -> (overrides, the rule it must be quarantined under)
BAD_ROWS: dict[str, tuple[dict[str, str | None], str]] = {
    "blank_event_id": ({"event_id": "  "}, "missing_event_id"),
    "null_user": ({"user_id": None}, "missing_user_id"),
    "blank_user": ({"user_id": "   "}, "missing_user_id"),
    "long_user_id": ({"user_id": "u" * 300}, "id_too_long"),
    "unknown_type": ({"event_type": "clickk"}, "unknown_event_type"),
    "null_type": ({"event_type": None}, "unknown_event_type"),
    "bad_ts": ({"ts": "2024-13-45 99:61:00"}, "unparsable_timestamp"),
    "future_ts": ({"ts": "2099-01-01 00:00:00"}, "future_timestamp"),
    "ancient_ts": ({"ts": "1970-01-02 00:00:00"}, "implausible_timestamp"),
    "late_arrival": ({"ts": "2024-01-15 09:00:00"}, "outside_load_window"),
    "no_item": ({"item_id": None}, "missing_item_id"),
    "postage": ({"item_id": "POST"}, "non_product_code"),
    "bank_charges": ({"item_id": "BANK CHARGES"}, "non_product_code"),
    "empty_search": ({"event_type": "search", "item_id": None, "price": None, "quantity": None, "query": " "},
                     "search_without_query"),
    "price_text": ({"price": "12,50 EUR"}, "price_not_numeric"),
    "price_nan": ({"price": "NaN"}, "price_not_numeric"),
    "negative_price": ({"price": "-1.00"}, "negative_price"),
    "absurd_price": ({"price": "9999999"}, "absurd_price"),
    "free_sale": ({"price": "0"}, "zero_price_sale"),
    "qty_text": ({"quantity": "2.5x"}, "quantity_not_integer"),
    "qty_decimal": ({"quantity": "1.5"}, "quantity_not_integer"),
    "negative_qty": ({"quantity": "-3"}, "non_positive_quantity"),
    "absurd_qty": ({"quantity": "500000"}, "absurd_quantity"),
    "toaster": ({"device": "toaster"}, "unknown_device"),
    "mojibake": ({"query": "caf\ufffd"}, "malformed_unicode"),
    "nul_byte": ({"category": "home\x00decor"}, "malformed_unicode"),
    "huge_query": ({"event_type": "search", "item_id": None, "query": "serum " * 200}, "oversized_text"),
}
GOOD_ROWS = [
    clean("good_purchase"),
    clean("good_view", event_id="e-view", event_type="VIEW ", price="3", quantity=None, device=None),
    clean("good_search", event_id="e-search", event_type="search", item_id=None, price=None, quantity=None,
          query="hanging heart", ts="2024-02-11T08:00:00"),
    clean("good_bob", event_id="e-bob", user_id="bob", ts="1707559200"),  # epoch seconds
]
EXACT_DUPLICATE = clean("good_purchase", event_id="e-good_purchase-copy")  # same content, another id
NEAR_DUPLICATE = clean("near", event_id="e-near", ts="2024-02-10 10:00:01")  # same action 1 s later
REUSED_ID = clean("reused_id", event_id="e-view", ts="2024-02-12 09:00:00")  # another event under a taken id


def raw_frame(spark: SparkSession, rows: list[dict[str, str | None]]):
    columns = RAW_COLUMNS["events"]
    frame = spark.createDataFrame([tuple(r[c] for c in columns) for r in rows], ", ".join(f"{c} string" for c in columns))
    return frame.withColumn("raw_row", F.to_json(F.struct(*columns)))


def all_rows() -> list[dict[str, str | None]]:
    return [clean(case, **over) for case, (over, _rule) in BAD_ROWS.items()] + GOOD_ROWS + [EXACT_DUPLICATE, NEAR_DUPLICATE, REUSED_ID]


@pytest.fixture(scope="module")
def ingested(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, storage_engine: str):
    """One load of the hand-built rows; the tests below read what it left."""
    import os

    os.environ["SHOPPER_PSEUDONYM_KEY"] = KEY
    root = tmp_path_factory.mktemp("ingest")
    config = load_config("local", [f"lakehouse.root={root}", f"lakehouse.engine={storage_engine}"])
    store = open_store(spark, config)
    batch = RawBatch(source="test", events=raw_frame(spark, all_rows()))
    load_id = make_load_id("test", WINDOW)
    loads = Ingestion(spark, store, config, batch, WINDOW, load_id, LOAD_TIME).run()
    quarantine = {json.loads(r.raw_row)["session_id"]: (r.rule, r.detail, r.raw_row)
                  for r in store.read(QUARANTINE).collect()}
    yield {"config": config, "store": store, "loads": loads, "quarantine": quarantine, "batch": batch,
           "load_id": load_id}
    os.environ.pop("SHOPPER_PSEUDONYM_KEY", None)


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_quarantined_with_its_rule_and_raw_row(ingested: dict, case: str) -> None:
    overrides, rule = BAD_ROWS[case]
    assert case in ingested["quarantine"], f"{case} was not quarantined"
    got_rule, detail, raw_row = ingested["quarantine"][case]
    assert got_rule == rule, f"{case}: {got_rule} ({detail}) instead of {rule}"
    assert json.loads(raw_row)["session_id"] == case  # the raw row is kept as it came
    assert detail


def test_near_duplicate_is_quarantined_and_exact_duplicate_dropped(ingested: dict) -> None:
    assert ingested["quarantine"]["near"][0] == "near_duplicate"
    assert "e-good_purchase" in ingested["quarantine"]["near"][1]
    events = ingested["store"].read(EVENTS)
    assert events.where(F.col("session_id") == "good_purchase").count() == 1


def test_a_reused_event_id_keeps_its_earliest_event(ingested: dict) -> None:
    events = ingested["store"].read(EVENTS).where(F.col("event_id") == "e-view").collect()
    assert [r.session_id for r in events] == ["good_view"]  # the later purchase under that id is dropped
    assert "reused_id" not in ingested["quarantine"]  # a duplicate, counted, not quarantined


def test_counts_reconcile_exactly(ingested: dict) -> None:
    (events,) = [x for x in ingested["loads"] if x.entity == "events"]
    assert events.input_rows == len(all_rows()) == 34
    assert events.quarantined_rows == len(BAD_ROWS) + 1 == 28  # + the near duplicate
    assert events.duplicate_rows == 2  # the exact copy and the reused id
    assert events.accepted_rows == events.new_rows == 4
    assert events.input_rows == events.accepted_rows + events.quarantined_rows + events.duplicate_rows
    recorded = ingested["store"].read(INGEST_LOADS).where(F.col("entity") == "events").collect()
    assert [(r.input_rows, r.accepted_rows, r.quarantined_rows, r.duplicate_rows) for r in recorded] == [(34, 4, 28, 2)]


def test_accepted_rows_are_typed_and_cleaned(ingested: dict) -> None:
    rows = {r.session_id: r for r in ingested["store"].read(EVENTS).collect()}
    assert set(rows) == {"good_purchase", "good_view", "good_search", "good_bob"}
    view = rows["good_view"]
    assert (view.event_type, view.device, view.quantity, view.price) == ("view", "unknown", None, 3.0)
    assert rows["good_search"].ts == datetime(2024, 2, 11, 8, 0, 0)
    assert rows["good_bob"].ts == datetime(2024, 2, 10, 10, 0, 0)  # from epoch seconds
    assert rows["good_purchase"].event_date == date(2024, 2, 10)
    assert rows["good_purchase"].load_id == ingested["load_id"]


def test_raw_user_ids_never_reach_bronze(ingested: dict) -> None:
    store: DeltaStore = ingested["store"]
    ids = {r.user_id for r in store.read(EVENTS).select("user_id").collect()}
    assert ids == {pseudonym(KEY.encode(), "test", "alice"), pseudonym(KEY.encode(), "test", "bob")}
    assert not {"alice", "bob"} & ids
    mapping = {r.raw_user_id: r.user_id for r in store.read(USER_ID_MAP).collect()}
    assert mapping == {"alice": pseudonym(KEY.encode(), "test", "alice"), "bob": pseudonym(KEY.encode(), "test", "bob")}
    # The key never shows in a query plan.
    plan = store.read(EVENTS)._jdf.queryExecution().toString()  # noqa: SLF001
    assert KEY not in plan


def test_rerun_of_the_same_window_changes_nothing(spark: SparkSession, ingested: dict) -> None:
    store: DeltaStore = ingested["store"]
    before = (store.version(EVENTS), store.read(EVENTS).count(), store.read(QUARANTINE).count(),
              store.read(USER_ID_MAP).count(), store.read(INGEST_LOADS).count())
    loads = Ingestion(spark, store, ingested["config"], ingested["batch"], WINDOW, ingested["load_id"], LOAD_TIME).run()
    (events,) = [x for x in loads if x.entity == "events"]
    assert (events.new_rows, events.already_loaded_rows) == (0, 4)
    after = (store.version(EVENTS), store.read(EVENTS).count(), store.read(QUARANTINE).count(),
             store.read(USER_ID_MAP).count(), store.read(INGEST_LOADS).count())
    assert after == before


def test_schema_drift_fails_before_anything_is_written(spark: SparkSession, config: Config, store: DeltaStore) -> None:
    frame = raw_frame(spark, GOOD_ROWS).drop("price", "device")
    batch = RawBatch(source="test", events=frame)
    with pytest.raises(SchemaDriftError, match=r"lacks column\(s\) \['price', 'device'\].*nothing was written"):
        Ingestion(spark, store, config, batch, WINDOW, "drift", LOAD_TIME).run()
    assert not store.exists(EVENTS)


def test_wrong_column_types_are_quarantined_not_crashing(spark: SparkSession, config: Config, store: DeltaStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", KEY)
    # A source that delivers price as an array of doubles and another that types quantity as double.
    rows = [clean("typed_a"), clean("typed_b", event_id="e-2", ts="2024-02-12 10:00:00")]
    arrays = raw_frame(spark, rows).drop("raw_row").withColumn("price", F.array(F.col("price").cast("double"), F.lit(1.0)))
    loads = Ingestion(spark, store, config, RawBatch(source="test", events=arrays), WINDOW, "typed", LOAD_TIME).run()
    quarantined = store.read(QUARANTINE).where("load_id = 'typed'").collect()
    assert sorted(r.rule for r in quarantined) == ["price_not_numeric", "price_not_numeric"]
    assert any('"price":[2.55,1.0]' in r.raw_row for r in quarantined)  # the raw row keeps the typed value
    assert loads[0].balances()
    doubles = raw_frame(spark, rows).withColumn("quantity", F.col("quantity").cast("double"))  # "6.0"
    Ingestion(spark, store, config, RawBatch(source="test", events=doubles), WINDOW, "typed2", LOAD_TIME).run()
    rules = sorted(r.rule for r in store.read(QUARANTINE).where("load_id = 'typed2'").collect())
    assert rules == ["quantity_not_integer", "quantity_not_integer"]


def test_users_are_validated_and_pseudonymised(spark: SparkSession, config: Config, store: DeltaStore,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", KEY)
    columns = RAW_COLUMNS["users"]
    rows = [("alice", "25-34", "Female", "Leeds", "United Kingdom", "2023-05-01", "Mobile"),
            ("bob", "200+", "male", None, "France", "2023-05-01", None),
            ("carol", None, None, None, None, "not a date", None),
            ("dave", None, "x", None, None, None, None),
            ("  ", None, None, None, None, None, None),
            ("erin", None, None, None, None, "2099-01-01", None),
            ("alice", "25-34", "Female", "Leeds", "United Kingdom", "2023-05-01", "Mobile")]
    users = spark.createDataFrame(rows, ", ".join(f"{c} string" for c in columns)).withColumn(
        "raw_row", F.to_json(F.struct(*columns)))
    batch = RawBatch(source="test", events=raw_frame(spark, [clean("u_ok")]), users=users)
    loads = Ingestion(spark, store, config, batch, WINDOW, "users", LOAD_TIME).run()
    (user_load,) = [x for x in loads if x.entity == "users"]
    assert (user_load.input_rows, user_load.accepted_rows, user_load.quarantined_rows, user_load.duplicate_rows) == (7, 1, 5, 1)
    rules = sorted(r.rule for r in store.read(QUARANTINE).where("entity = 'users'").collect())
    assert rules == ["future_date", "missing_user_id", "unknown_age_band", "unknown_gender", "unparsable_date"]
    (alice,) = store.read(USERS).collect()
    assert (alice.user_id, alice.gender, alice.device, alice.signup_date) == (
        pseudonym(KEY.encode(), "test", "alice"), "female", "mobile", date(2023, 5, 1))


def test_generated_local_key_is_stable_and_private(spark: SparkSession, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from shopper_profiles.ingest.pseudonym import load_key

    monkeypatch.delenv("SHOPPER_PSEUDONYM_KEY", raising=False)
    config = load_config("local", [f"lakehouse.root={tmp_path}"])
    first = load_key(spark, config)
    assert load_key(spark, config) == first and len(first) == 64
    key_file = tmp_path / "_secrets" / "pseudonym.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "from-env")
    assert load_key(spark, config) == b"from-env"


def test_unbalanced_counts_fail_loudly() -> None:
    from shopper_profiles.ingest.load import EntityLoad, ReconciliationError, assert_reconciled

    fine = EntityLoad("events", 10, 7, 2, 1, 0, 7)
    assert_reconciled([fine], "load-1")
    lost = EntityLoad("events", 10, 7, 1, 1, 0, 7)  # one row unaccounted for
    with pytest.raises(ReconciliationError, match="load-1 does not reconcile.*'input_rows': 10"):
        assert_reconciled([fine, lost], "load-1")


@pytest.mark.parametrize("key", [b"profiles-test", b"k" * 64, bytes(range(200))])
def test_pseudonyms_computed_in_the_jvm_equal_python_hmac_and_keep_the_key_out_of_the_plan(
        spark: SparkSession, key: bytes) -> None:
    """Short, block-sized and longer-than-a-block keys (hashed first); ASCII, unicode and odd ids."""
    import hashlib
    import hmac

    from shopper_profiles.ingest.pseudonym import _pads, id_map

    raw = ["sim-0000042", "alice", "Zoë", "客户-17", "a,b\"c", "x" * 300, "12345.0"]
    frame = spark.createDataFrame([(r,) for r in raw + [None, "alice"]], "raw_user_id string")
    mapped = id_map(frame, "online_retail", key)
    got = {r.raw_user_id: r.user_id for r in mapped.collect()}
    expected = {r: "u_" + hmac.new(key, f"online_retail\x1f{r}".encode(), hashlib.sha256).hexdigest()[:32] for r in raw}
    assert got == expected
    assert got == {r: pseudonym(key, "online_retail", r) for r in raw}
    plan = mapped._jdf.queryExecution().toString().lower()
    for secret in (key.hex(), *(p.hex() for p in _pads(key))):
        assert secret[:16] not in plan


def test_a_load_that_does_not_reconcile_commits_nothing(spark: SparkSession, tmp_path: Path, monkeypatch) -> None:
    """A bug that loses one quarantined row is caught before any table changes: bronze, the
    quarantine, the id map and the load record stay as they were."""
    from shopper_profiles.ingest import load
    from shopper_profiles.ingest.load import ReconciliationError

    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", KEY)
    config = load_config("local", [f"lakehouse.root={tmp_path / 'lh'}"])
    store = open_store(spark, config)
    real = load._quarantine_rows
    monkeypatch.setattr(load, "_quarantine_rows",
                        lambda flagged, *args: real(flagged, *args).where(F.col("rule") != "negative_price"))
    batch = RawBatch(source="test", events=raw_frame(spark, all_rows()))
    with pytest.raises(ReconciliationError, match="does not reconcile"):
        Ingestion(spark, store, config, batch, WINDOW, make_load_id("test", WINDOW), LOAD_TIME).run()
    for spec in (EVENTS, QUARANTINE, USER_ID_MAP, INGEST_LOADS):
        assert store.version(spec) == 0 and store.read(spec).count() == 0, spec.name
