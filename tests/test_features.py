"""Feature families on a hand-built shop with values worked out by hand (see the comments),
point-in-time correctness, data-quality gating and incremental, idempotent snapshots."""

from __future__ import annotations

import math
import statistics
from datetime import date, datetime

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from shopper_profiles.config import load_config
from shopper_profiles.features import events_before
from shopper_profiles.features.build import build_snapshot, compute_families, dates_between
from shopper_profiles.features.quality import DataQualityError
from shopper_profiles.features.schemas import feature_specs, stats_spec
from shopper_profiles.ingest.bronze import EVENTS, ITEMS, SOCIAL_EDGES, USERS
from shopper_profiles.storage import DeltaStore

D = date(2024, 3, 1)
A, B, C = ("A", "beauty > skincare", 10.0), ("B", "beauty > makeup", 30.0), ("C", "home > decor", 50.0)


def ev(eid: str, user: str, ts: str, etype: str, item=None, price=None, qty=None, query=None, session="s", device="mobile"):
    item_id, category, _ = item if item else (None, None, None)
    when = datetime.fromisoformat(ts)
    return (eid, user, when, when.date(), etype, item_id, category, price, qty, query, session, device, "test", "load")


BEFORE_D = [
    ev("e1", "u1", "2024-02-29 10:00:00", "view", A, 10.0, session="s1"),
    ev("e2", "u1", "2024-02-29 10:00:30", "add_to_cart", A, 10.0, 2, session="s1"),
    ev("e3", "u1", "2024-02-29 10:01:00", "purchase", A, 10.0, 2, session="s1"),
    ev("e4", "u1", "2024-02-25 09:00:00", "search", query="Hydrating Serum", session="s2", device="desktop"),
    ev("e5", "u1", "2024-02-25 09:02:00", "view", B, 30.0, session="s2", device="desktop"),
    ev("e6", "u1", "2024-02-25 09:03:00", "view", B, 30.0, session="s2", device="desktop"),
    ev("e7", "u1", "2024-02-25 09:04:00", "add_to_cart", B, 30.0, 1, session="s2", device="desktop"),
    ev("e8", "u1", "2024-01-15 12:00:00", "purchase", C, 50.0, 1, session="s3", device="tablet"),
    ev("f1", "u2", "2023-11-01 08:00:00", "view", C, 50.0, session="s5", device="tablet"),
    ev("f2", "u2", "2023-11-01 08:05:00", "purchase", C, 40.0, 1, session="s5", device="tablet"),
    ev("f3", "u2", "2024-02-20 20:00:00", "share", A, session="s6"),
    ev("e11", "u1", "2024-02-28 18:00:00", "like", A, session="s10", device="desktop"),  # u1 likes A after u2 shared it
]
AT_OR_AFTER_D = [  # planted after the cut: must change nothing for snapshot D
    ev("e9", "u1", "2024-03-01 00:00:00", "purchase", B, 30.0, 5, session="s4"),
    ev("e10", "u1", "2024-03-05 11:00:00", "view", C, 50.0, session="s7"),
    ev("g1", "u3", "2024-03-02 10:00:00", "view", A, 10.0, session="s8"),
    ev("f4", "u2", "2024-03-01 09:00:00", "search", query="lipstick", session="s9"),
]
USER_ROWS = [("u1", "25-34", "female", "London", "United Kingdom", date(2023, 1, 1), "mobile", "test", "load"),
             ("u2", None, None, None, "France", None, "unknown", "test", "load"),
             ("u3", "18-24", "male", "Paris", "France", date(2024, 3, 2), "app", "test", "load")]
ITEM_ROWS = [("A", "Serum", "beauty > skincare", "Bea", 10.0, None, "test", "load"),
             ("B", "Lipstick", "beauty > makeup", "Mak", 35.0, None, "test", "load"),
             ("C", "Vase", "home > decor", "Hom", 50.0, None, "test", "load")]
EDGE_ROWS = [("u1", "u2", "friend", datetime(2024, 1, 1), "test", "load"),
             ("u2", "u1", "follow", datetime(2024, 2, 1), "test", "load"),
             ("u1", "u3", "follow", datetime(2024, 3, 10), "test", "load")]


def frames(spark: SparkSession, events: list[tuple]) -> dict[str, DataFrame]:
    return {
        "events": spark.createDataFrame(events, EVENTS.schema),
        "users": spark.createDataFrame(USER_ROWS, USERS.schema),
        "items": spark.createDataFrame(ITEM_ROWS, ITEMS.schema),
        "edges": spark.createDataFrame(EDGE_ROWS, SOCIAL_EDGES.schema),
    }


@pytest.fixture(scope="module")
def families(spark: SparkSession) -> dict[str, dict[str, dict]]:
    config = load_config("local", ["features.sequence_length=3"])
    f = frames(spark, BEFORE_D + AT_OR_AFTER_D)
    out = compute_families(f["events"], f["users"], f["items"], f["edges"], D, config)
    return {name: {r["user_id"]: r.asDict() for r in frame.collect()} for name, frame in out.items()}


def days(delta_seconds: float) -> float:
    return delta_seconds / 86400.0


def test_population_is_users_with_events_before_d(families) -> None:
    for name, rows in families.items():
        assert set(rows) == {"u1", "u2"}, name  # u3's only event is after D


def test_basic_family(families) -> None:
    u1, u2 = families["basic"]["u1"], families["basic"]["u2"]
    # u1: registered attributes; primary device = most used in 90 days (desktop 5 > mobile 3 > tablet 1).
    assert (u1["age_band"], u1["gender"], u1["country"], u1["city"]) == ("25-34", "female", "United Kingdom", "London")
    assert not any(u1[f"{c}_imputed"] for c in ("age_band", "gender", "country", "city", "primary_device", "signup_date"))
    assert (u1["primary_device"], u1["signup_date"], u1["tenure_days"]) == ("desktop", date(2023, 1, 1), 425)
    # u2: missing values filled by the stated rules and flagged.
    assert (u2["age_band"], u2["gender"], u2["city"], u2["country"]) == ("unknown", "unknown", "unknown", "France")
    assert (u2["age_band_imputed"], u2["gender_imputed"], u2["city_imputed"], u2["country_imputed"]) == (True, True, True, False)
    # Only f3 (mobile) falls in the last 90 days; signup unknown -> first event 2023-11-01 -> 121 days.
    assert (u2["primary_device"], u2["primary_device_imputed"]) == ("mobile", False)
    assert (u2["signup_date"], u2["signup_date_imputed"], u2["tenure_days"]) == (date(2023, 11, 1), True, 121)


def test_behaviour_family(families) -> None:
    u1, u2 = families["behaviour"]["u1"], families["behaviour"]["u2"]
    got = {k: u1[k] for k in ("views_1d", "searches_1d", "carts_1d", "purchases_1d", "spend_1d", "sessions_1d")}
    assert got == {"views_1d": 1, "searches_1d": 0, "carts_1d": 1, "purchases_1d": 1, "spend_1d": 20.0, "sessions_1d": 1}
    for w in (7, 30):  # sessions s1, s2 and s10 (the like)
        got = [u1[f"{k}_{w}d"] for k in ("views", "searches", "carts", "purchases", "spend", "sessions")]
        assert got == [3, 1, 2, 1, 20.0, 3]
    assert [u1[f"{k}_90d"] for k in ("views", "searches", "carts", "purchases", "spend", "sessions")] == [3, 1, 2, 2, 70.0, 4]
    assert u1["days_since_last_view"] == pytest.approx(days(14 * 3600))
    assert u1["days_since_last_search"] == pytest.approx(4 + 15 / 24)
    assert u1["days_since_last_cart"] == pytest.approx(days(13 * 3600 + 59 * 60 + 30))
    assert u1["days_since_last_purchase"] == pytest.approx(days(13 * 3600 + 59 * 60))
    assert u1["avg_session_seconds_30d"] == 100.0  # s1 lasted 60 s, s2 240 s, s10 0 s
    assert (u1["cart_rate_30d"], u1["purchase_rate_30d"], u1["cart_to_purchase_30d"]) == pytest.approx((2 / 3, 1 / 3, 0.5))
    assert u1["category_share_90d"] == pytest.approx({"beauty": 7 / 8, "home": 1 / 8})
    assert u1["brand_share_90d"] == pytest.approx({"Bea": 4 / 8, "Mak": 3 / 8, "Hom": 1 / 8})
    assert u1["top_search_terms_90d"] == ["hydrating", "serum"]
    assert [u2[f"{k}_90d"] for k in ("views", "searches", "carts", "purchases", "spend", "sessions")] == [0, 0, 0, 0, 0.0, 1]
    assert (u2["sessions_7d"], u2["sessions_30d"]) == (0, 1)
    assert u2["days_since_last_view"] == pytest.approx(121 - 8 / 24)
    assert u2["days_since_last_search"] is None and u2["days_since_last_cart"] is None
    assert u2["days_since_last_purchase"] == pytest.approx(121 - (8 * 60 + 5) / 1440)
    assert (u2["avg_session_seconds_30d"], u2["cart_rate_30d"], u2["purchase_rate_30d"]) == (0.0, None, None)
    assert u2["category_share_90d"] == {"beauty": 1.0} and u2["brand_share_90d"] == {"Bea": 1.0}
    assert u2["top_search_terms_90d"] == []


def test_events_without_a_session_count_as_events_never_as_sessions(spark: SparkSession) -> None:
    from shopper_profiles.features.behaviour import behaviour_features

    events = [ev("n1", "u9", "2024-02-29 10:00:00", "view", A, 10.0, session=None),
              ev("n2", "u9", "2024-02-29 11:00:00", "view", B, 30.0, session=None),
              ev("n3", "u9", "2024-02-29 12:00:00", "view", A, 10.0, session="s1"),
              ev("n4", "u9", "2024-02-29 12:00:10", "purchase", A, 10.0, 1, session="s1")]
    f = frames(spark, events)
    row = behaviour_features(f["events"], f["items"], D, [1, 7, 30, 90]).collect()[0].asDict()
    assert (row["views_1d"], row["purchases_1d"], row["spend_1d"]) == (3, 1, 10.0)
    assert row["sessions_1d"] == row["sessions_90d"] == 1  # s1 only
    assert row["avg_session_seconds_30d"] == 10.0  # the 2 h between the session-less views is no session


def _affinity(events: list[tuple], user: str) -> dict[str, float]:
    """Independent re-statement of the rule: action weight x half-life decay, shares of the total."""
    weights = {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0, "like": 2.0, "share": 2.0, "review": 3.0}
    cut = datetime(2024, 3, 1)
    totals: dict[str, float] = {}
    for e in events:
        if e[1] != user or e[5] is None or e[2] >= cut or (cut - e[2]).days >= 90:
            continue
        age = (cut - e[2]).total_seconds() / 86400
        top = e[6].split(" > ")[0]
        totals[top] = totals.get(top, 0.0) + weights.get(e[4], 0.0) * 0.5 ** (age / 14)
    whole = sum(totals.values())
    return {k: v / whole for k, v in totals.items()}


def test_the_item_price_level_counts_each_item_once_and_shrinks_thin_evidence_towards_typical(spark: SparkSession) -> None:
    """exp(m n / (n + k)) with k = within / between shopper variance, both from the shoppers themselves
    (worked out here with numpy); unpriced items do not count; no spread beyond noise: all typical."""
    from shopper_profiles.features.need import item_price_level

    lps = {"a": [0.5, 0.3, 0.4, 0.6], "b": [-0.2, -0.4], "c": [0.1], "d": [-0.5, -0.3, -0.4, -0.45, -0.35]}
    rows = [(u, f"{u}{i}", v) for u, values in lps.items() for i, v in enumerate(values)] + [("c", "unpriced", None)]
    frame = spark.createDataFrame(rows, "user_id string, item_id string, _lp double")
    found = {r["user_id"]: r["item_price_level_90d"] for r in item_price_level(frame).collect()}
    n = np.array([len(v) for v in lps.values()])
    m = np.array([np.mean(v) for v in lps.values()])
    within = sum(((np.array(v) - np.mean(v)) ** 2).sum() for v in lps.values()) / (n - 1).sum()
    k = within / (m.var() - within * np.mean(1 / n))
    assert 0 < k < 1  # the shoppers differ far more than their items do: little shrinkage
    assert found == pytest.approx(dict(zip(lps, np.exp(m * n / (n + k)), strict=True)))
    # Two shoppers whose item prices spread alike around the same mean: nothing tells them apart.
    same = spark.createDataFrame([("a", "x", 1.0), ("a", "y", -1.0), ("b", "x", 0.9), ("b", "y", -0.9)],
                                 "user_id string, item_id string, _lp double")
    assert {r["item_price_level_90d"] for r in item_price_level(same).collect()} == {1.0}


def test_need_family(families) -> None:
    u1, u2 = families["need"]["u1"], families["need"]["u2"]
    # Open cart: B carted, not bought; B viewed twice; 1 search for 3 views in 7 days.
    assert (u1["carts_without_purchase_7d"], u1["repeat_views_7d"]) == (1, 1)
    assert u1["search_to_view_ratio_7d"] == pytest.approx(1 / 3)
    # Category medians over all purchases before D: skincare 10, decor median(50, 40) = 45.
    assert u1["paid_vs_category_median_90d"] == pytest.approx((10 / 10 + 50 / 45) / 2)
    assert u1["discount_share_90d"] == 0.0  # both paid the list price
    # Every priced event of the last 90 days (views and carts too) vs its category's median price
    # over all priced events before D, as a geometric mean.
    cut = datetime(2024, 3, 1)
    priced = [e for e in BEFORE_D if e[7] is not None and e[2] < cut]
    medians = {c: statistics.median(e[7] for e in priced if e[6] == c) for c in {e[6] for e in priced}}
    logs = [math.log(e[7] / medians[e[6]]) for e in priced if e[1] == "u1" and (cut - e[2]).days < 90]
    assert len(logs) > 2 and u1["browsed_vs_category_median_90d"] == pytest.approx(math.exp(sum(logs) / len(logs)))
    assert (u1["frequency_90d"], u1["monetary_90d"]) == (2, 70.0)
    assert u1["recency_days"] == pytest.approx(days(13 * 3600 + 59 * 60))
    assert (u1["r_score"], u1["f_score"], u1["m_score"], u1["rfm_segment"]) == (2, 2, 2, "222")
    assert (u2["r_score"], u2["f_score"], u2["m_score"], u2["rfm_segment"]) == (1, 1, 1, "111")
    assert u1["category_affinity_90d"] == pytest.approx(_affinity(BEFORE_D, "u1"))
    assert u2["category_affinity_90d"] == pytest.approx({"beauty": 1.0})
    assert (u1["events_30d"], u1["events_prev_30d"], u1["activity_trend"]) == (8, 1, 4.5)
    assert (u1["inactive"], u1["declining_frequency"]) == (False, False)
    assert u1["purchase_intent_rule"] == pytest.approx(0.8)  # 0.4 open cart + 0.3 x 1/3 + 0.3 recent
    assert u1["churn_risk_rule"] == pytest.approx(round(0.2 * days(13 * 3600 + 59 * 60) / 60, 6))
    assert (u2["carts_without_purchase_7d"], u2["repeat_views_7d"], u2["search_to_view_ratio_7d"]) == (0, 0, None)
    assert (u2["paid_vs_category_median_90d"], u2["frequency_90d"], u2["monetary_90d"]) == (None, 0, 0.0)
    assert u2["browsed_vs_category_median_90d"] is None  # a view without a price
    # Every item u1 touched cost its category's median (A 10, B 30, C 50): typical; u2 none priced.
    assert (u1["item_price_level_90d"], u2["item_price_level_90d"]) == (1.0, 1.0)
    assert u2["recency_days"] == pytest.approx(121 - (8 * 60 + 5) / 1440)
    assert u2["days_since_last_event"] == pytest.approx(9 + 4 / 24)
    assert (u2["events_30d"], u2["events_prev_30d"], u2["activity_trend"]) == (1, 0, 2.0)
    assert u2["purchase_intent_rule"] == 0.0
    assert u2["churn_risk_rule"] == pytest.approx(round(0.2 * (9 + 4 / 24) / 60, 6))


def test_social_family(families) -> None:
    u1, u2 = families["social"]["u1"], families["social"]["u2"]
    # Edges before D: u1-u2 friends, u2 follows u1 (u1 -> u3 is after D).
    assert (u1["friends_count"], u1["following_count"], u1["followers_count"]) == (1, 0, 1)
    assert (u2["friends_count"], u2["following_count"], u2["followers_count"]) == (1, 1, 0)
    # u2 shared A on 02-20; neighbour u1 then viewed and bought A: one adopted share.
    assert (u2["shares_given_90d"], u2["shares_adopted_90d"], u1["shares_adopted_90d"]) == (1, 1, 0)
    # u1's like of A (02-28) came after u2's share: engagement received by u2, given by u1.
    assert (u1["likes_given_90d"], u2["likes_received_90d"], u1["likes_received_90d"]) == (1, 1, 0)
    assert (u2["shares_received_90d"], u2["reviews_received_90d"]) == (0, 0)
    assert u1["influence_score"] == pytest.approx(math.log1p(1))  # one follower
    assert u2["influence_score"] == pytest.approx(math.log1p(1))  # one adopted share
    assert u1["neighbour_category_affinity"] == pytest.approx({"beauty": 1.0})
    assert u2["neighbour_category_affinity"] == pytest.approx({"beauty": 0.875, "home": 0.125})


def test_behaviour_sequences_keep_the_last_n_oldest_first(families) -> None:
    u1, u2 = families["sequences"]["u1"], families["sequences"]["u2"]
    assert (u1["item_ids"], u1["event_types"], u1["sequence_length"]) == (["A", "A", "A"], ["view", "add_to_cart", "purchase"], 3)
    assert u1["event_ts"] == [datetime(2024, 2, 29, 10, 0), datetime(2024, 2, 29, 10, 0, 30), datetime(2024, 2, 29, 10, 1)]
    assert (u2["item_ids"], u2["event_types"], u2["categories"]) == (
        ["C", "C", "A"], ["view", "purchase", "share"], ["home > decor", "home > decor", "beauty > skincare"])


def test_events_at_or_after_d_change_nothing(spark: SparkSession) -> None:
    config = load_config("local")
    with_future = frames(spark, BEFORE_D + AT_OR_AFTER_D)
    without = frames(spark, BEFORE_D)
    a = compute_families(with_future["events"], with_future["users"], with_future["items"], with_future["edges"], D, config)
    b = compute_families(without["events"], without["users"], without["items"], without["edges"].where("ts < '2024-03-01'"),
                         D, config)
    for name in a:
        left, right = a[name], b[name]
        # Maps are not comparable in set operations; compare them as sorted entries.
        cols = [F.array_sort(F.map_entries(c)).alias(c) if t.startswith("map") else F.col(c) for c, t in left.dtypes]
        assert left.select(*cols).exceptAll(right.select(*cols)).count() == 0, name
        assert right.select(*cols).exceptAll(left.select(*cols)).count() == 0, name
    assert events_before(with_future["events"], D).count() == len(BEFORE_D)


def _seed_bronze(spark: SparkSession, store: DeltaStore, events: list[tuple]) -> None:
    f = frames(spark, events)
    for spec, frame in ((EVENTS, f["events"]), (USERS, f["users"]), (ITEMS, f["items"]), (SOCIAL_EDGES, f["edges"])):
        store.create(spec)
        store.append(frame, spec)


def test_snapshots_are_incremental_and_idempotent(spark: SparkSession, store: DeltaStore, config) -> None:
    _seed_bronze(spark, store, BEFORE_D + AT_OR_AFTER_D)
    specs = feature_specs(config.features)
    first = build_snapshot(spark, store, config, D)
    assert first["active_users"] == 2 and first["inputs"]["events"] == 1
    snapshot_d = {n: store.read(s).where(F.col("snapshot_date") == D) for n, s in specs.items()}
    frozen = {n: f.select("user_id", "snapshot_date").collect() for n, f in snapshot_d.items()}
    build_snapshot(spark, store, config, date(2024, 3, 2))  # D+1 sees e9 and f4: still u1, u2
    third = build_snapshot(spark, store, config, date(2024, 3, 3))  # u3 joins on D+2
    assert third["active_users"] == 3
    for name, spec in specs.items():
        assert store.read(spec).where(F.col("snapshot_date") == D).select("user_id", "snapshot_date").collect() == frozen[name]
    count_before = store.read(specs["behaviour"]).count()
    build_snapshot(spark, store, config, D)  # rerun of D
    assert store.read(specs["behaviour"]).count() == count_before == 2 + 2 + 3
    d1 = store.read(specs["behaviour"]).where(F.col("snapshot_date") == date(2024, 3, 2)).where("user_id = 'u1'").first()
    assert (d1["purchases_1d"], d1["spend_1d"]) == (1, 150.0)  # e9 (5 x 30) counts from D+1 on
    stats = store.read(stats_spec()).where(F.col("snapshot_date") == D)
    assert stats.select("table_name").distinct().count() == 5
    views = stats.where("table_name = 'features_behaviour' AND feature = 'views_90d'").first()
    assert (views["rows"], views["nulls"], views["mean"], views["max"]) == (2, 0, 1.5, 3.0)


def test_backfill_dates_inclusive() -> None:
    assert dates_between(date(2024, 2, 28), date(2024, 3, 1)) == [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]
    with pytest.raises(ValueError, match="end is before the start"):
        dates_between(date(2024, 3, 2), date(2024, 3, 1))


def test_failing_expectation_aborts_the_commit(spark: SparkSession, store: DeltaStore, config) -> None:
    bad = ev("x1", "u1", "2024-02-29 11:00:00", "purchase", A, 10.0, -4, session="s1")  # negative spend
    _seed_bronze(spark, store, BEFORE_D + [bad])
    expected = r"nothing was committed:\n  features_behaviour: spend_1d >= 0: 1 rows; spend_7d >= 0: 1 rows"
    with pytest.raises(DataQualityError, match=expected):
        build_snapshot(spark, store, config, D)
    for spec in feature_specs(config.features).values():
        assert store.version(spec) == 0  # created, never written


def test_a_snapshot_is_seen_whole_or_not_at_all(spark: SparkSession, store: DeltaStore, config, monkeypatch) -> None:
    """A build that dies after writing some of its tables: readers keep the last complete snapshot
    of that date (or, for a date never completed, get a clear error) -- never half of each."""
    from shopper_profiles.features.build import snapshot_tables

    _seed_bronze(spark, store, BEFORE_D)
    build_snapshot(spark, store, config, D)

    def users(frames: dict[str, DataFrame]) -> dict[str, set[str]]:
        return {name: {r.user_id for r in frame.select("user_id").collect()} for name, frame in frames.items()}

    published = users(snapshot_tables(store, config, D))
    assert set(published) == {"basic", "behaviour", "need", "social", "sequences"}
    assert all(found == {"u1", "u2"} for found in published.values())
    f = frames(spark, [ev("g1", "u9", "2024-02-27 10:00:00", "view", A, 10.0, session="s9")])
    store.append(f["events"], EVENTS)  # a new shopper before D: a rebuild of D would add u9 everywhere

    real, written = store.overwrite, []

    def dies_at_the_third_table(frame, spec, *args, **kwargs):
        if spec.name.startswith(("features_", "behaviour_sequences")):
            if len(written) == 2:
                raise RuntimeError("injected: the driver died mid-build")
            written.append(spec.name)
        return real(frame, spec, *args, **kwargs)

    monkeypatch.setattr(store, "overwrite", dies_at_the_third_table)
    with pytest.raises(RuntimeError, match="injected"):
        build_snapshot(spark, store, config, D)
    half = store.read(feature_specs(config.features)["basic"]).where(F.col("snapshot_date") == D)
    assert "u9" in {r.user_id for r in half.collect()}  # the dead build did write its first tables ...
    assert users(snapshot_tables(store, config, D)) == published  # ... which no reader sees
    written.clear()
    with pytest.raises(RuntimeError, match="injected"):
        build_snapshot(spark, store, config, date(2024, 3, 2))
    with pytest.raises(ValueError, match="2024-03-02: that feature snapshot is missing or incomplete"):
        snapshot_tables(store, config, date(2024, 3, 2))
    monkeypatch.setattr(store, "overwrite", real)
    build_snapshot(spark, store, config, D)  # the rerun completes: now every table has u9
    assert all(found == {"u1", "u2", "u9"} for found in users(snapshot_tables(store, config, D)).values())


def test_exported_sequences_are_first_touches_of_a_core_every_member_keeps(spark: SparkSession, store: DeltaStore,
                                                                          config, tmp_path) -> None:
    """The public-format export: purchases only, each item once at its first purchase, and the
    2-core filter iterated until it holds -- D (bought once) goes, so u3 keeps only C and goes, so C
    (then bought by u1 alone) goes too."""
    from conftest import run_job
    from shopper_profiles.model.sequential import read_sequences

    item_d, item_e = ("D", "home > decor", 5.0), ("E", "home > decor", 8.0)
    _seed_bronze(spark, store, [
        ev("x1", "u1", "2024-02-01 10:00:00", "purchase", A, 10.0, 1),
        ev("x2", "u1", "2024-02-02 10:00:00", "purchase", B, 30.0, 1),
        ev("x3", "u1", "2024-02-03 10:00:00", "purchase", A, 10.0, 1),  # a repeat: kept at its first touch
        ev("x4", "u1", "2024-02-04 10:00:00", "purchase", C, 50.0, 1),
        ev("x5", "u2", "2024-02-01 09:00:00", "purchase", B, 30.0, 1),
        ev("x6", "u2", "2024-02-05 09:00:00", "purchase", A, 10.0, 1),
        ev("x7", "u2", "2024-02-06 09:00:00", "view", C, 50.0),  # not a purchase
        ev("x8", "u3", "2024-02-01 08:00:00", "purchase", C, 50.0, 1),
        ev("x9", "u3", "2024-02-02 08:00:00", "purchase", item_d, 5.0, 1),
        ev("x10", "u1", "2024-02-07 10:00:00", "purchase", item_e, 8.0, 1),
        ev("x11", "u2", "2024-02-07 09:00:00", "purchase", item_e, 8.0, 1),
    ])
    out = tmp_path / "export" / "shop.txt"
    root = f"lakehouse.root={config.lakehouse.root}"
    report = run_job("export_sequences", ["--conf-override", root, "--out", str(out), "--min-count", "2"])
    assert (report["users"], report["items"], report["interactions"]) == (2, 3, 6)
    assert out.read_text().splitlines() == ["1 1 2 3", "2 2 1 3"]  # u1: A, B, E; u2: B, A, E (A = 1, B = 2, E = 3)
    assert (out.parent / "shop.txt.items.csv").read_text().splitlines() == ["item_index,item_id", "1,A", "2,B", "3,E"]
    assert [s.tolist() for s in read_sequences(out).sequences] == [[1, 2, 3], [2, 1, 3]]  # what the benchmark reads
    with pytest.raises(ValueError, match="lower --min-count"):
        run_job("export_sequences", ["--conf-override", root, "--out", str(out), "--min-count", "2",
                                     "--until", "2024-02-02"])
