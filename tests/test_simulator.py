"""The simulator: deterministic, windows compose, the planted truth shows in behaviour, and
planted dirt comes back out of ingestion under the matching rule."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from conftest import ingest_simulator, simulated_lakehouse
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window
from shopper_profiles.config import SimulatorConfig, load_config
from shopper_profiles.ingest.bronze import EVENTS, PLANTED_TRUTH, QUARANTINE, USER_ID_MAP
from shopper_profiles.ingest.load import Ingestion
from shopper_profiles.ingest.simulator import DIRTY_KINDS, simulate, simulate_events
from shopper_profiles.ingest.sources import land_source
from shopper_profiles.storage import open_store


def small(**changes: object) -> SimulatorConfig:
    base = load_config("local").simulator
    values = {"users": 300, "days": 30, "items_per_leaf": 20, "dirty_rate": 0.05, "duplicate_rate": 0.01} | changes
    return base.model_copy(update=values)


def same_rows(a: DataFrame, b: DataFrame) -> bool:
    a, b = a.localCheckpoint(), b.localCheckpoint()  # each side generated once, not once per exceptAll
    return a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0


def generated(spark: SparkSession, cfg: SimulatorConfig):
    """The batch as ``land_source`` makes it: the events generated once, then dirtied."""
    typed = simulate_events(spark, cfg, cfg.start_date, cfg.start_date + timedelta(days=cfg.days)).localCheckpoint()
    return simulate(spark, cfg, typed=typed)


def test_same_seed_gives_identical_tables_and_another_seed_does_not(spark: SparkSession) -> None:
    cfg = small()
    first, second = generated(spark, cfg), generated(spark, cfg)
    for name in ("events", "users", "items", "social_edges"):
        assert same_rows(getattr(first, name), getattr(second, name)), name
    assert same_rows(first.truth, second.truth)
    other = generated(spark, small(seed=cfg.seed + 1))
    assert not same_rows(first.events.select("user_id", "item_id"), other.events.select("user_id", "item_id"))


def test_windows_compose_into_the_whole_period(spark: SparkSession) -> None:
    cfg = small()
    mid = cfg.start_date + timedelta(days=12)
    end = cfg.start_date + timedelta(days=cfg.days)
    whole = simulate_events(spark, cfg, cfg.start_date, end)
    parts = simulate_events(spark, cfg, cfg.start_date, mid).unionByName(simulate_events(spark, cfg, mid, end))
    assert same_rows(whole, parts)
    outside = (F.col("ts") < F.lit(cfg.start_date).cast("timestamp")) | (F.col("ts") >= F.lit(end).cast("timestamp"))
    assert whole.where(outside).count() == 0


def test_planted_truth_shows_in_behaviour(spark: SparkSession) -> None:
    cfg = small(users=600, days=45)
    events = simulate_events(spark, cfg, cfg.start_date, cfg.start_date + timedelta(days=cfg.days))
    truth = simulate(spark, cfg).truth
    with_truth = events.join(truth, F.col("user_id") == F.col("raw_user_id"))
    # Interests: most events fall in the user's three planted top categories (complement follow-ups
    # and friends' influence bring the rest).
    top = F.split(F.col("category"), " > ")[0]
    in_top = with_truth.where(F.col("category").isNotNull()).select(
        F.array_contains("top_interests", top).cast("double").alias("hit"))
    assert in_top.agg(F.avg("hit")).first()[0] > 0.93
    # Price sensitivity: relative to the category's average, the most sensitive quartile pays less.
    purchases = with_truth.where("event_type = 'purchase'").withColumn(
        "relative_price", F.col("price") / F.avg("price").over(Window.partitionBy("category")))
    quartiles = purchases.withColumn("q", F.ntile(4).over(Window.orderBy("price_sensitivity")))
    paid = dict(quartiles.groupBy("q").agg(F.avg("relative_price")).collect())
    assert paid[4] < 0.85 * paid[1], paid
    # Demographics correlate with interests.
    beauty = truth.select("gender", F.array_contains("top_interests", "beauty").cast("double").alias("b"))
    share = dict(beauty.groupBy("gender").agg(F.avg("b")).collect())
    assert share["female"] > share["male"] + 0.2, share
    # Churned users stop: no events after their churn time.
    assert with_truth.where(F.col("churn_ts").isNotNull() & (F.col("ts") >= F.col("churn_ts"))).count() == 0
    # Propensity drives buying.
    buyers = with_truth.groupBy("raw_user_id", "purchase_propensity").agg(
        F.avg((F.col("event_type") == "purchase").cast("double")).alias("buy_rate"))
    assert buyers.stat.corr("buy_rate", "purchase_propensity") > 0.4


@pytest.mark.slow
def test_planted_dirt_comes_out_under_the_matching_rule(spark: SparkSession, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "k")
    config = load_config("local", [f"lakehouse.root={tmp_path}", "simulator.users=300", "simulator.days=30",
                                   "simulator.items_per_leaf=20", "simulator.dirty_rate=0.05", "simulator.duplicate_rate=0.01"])
    store = open_store(spark, config)
    batch, window, load_id = land_source(spark, config, "simulator")
    planted = dict(batch.injected.groupBy("kind").count().collect())
    assert set(DIRTY_KINDS) <= set(planted), "every dirty kind is planted at this rate"
    loads = Ingestion(spark, store, config, batch, window, load_id).run()
    quarantined = dict(store.read(QUARANTINE).groupBy("rule").count().collect())
    expected = {k: v for k, v in planted.items() if k != "exact_duplicate"}
    assert quarantined == expected
    (events,) = [x for x in loads if x.entity == "events"]
    assert events.duplicate_rows == planted["exact_duplicate"]
    assert events.input_rows == events.accepted_rows + events.quarantined_rows + events.duplicate_rows
    assert store.read(PLANTED_TRUTH).count() == 300
    assert store.read(PLANTED_TRUTH).join(store.read(USER_ID_MAP), "user_id").count() == 300
    assert store.read(EVENTS).where(F.col("user_id").startswith("sim-")).count() == 0


@pytest.mark.slow
def test_incremental_windows_append_only_new_events(spark: SparkSession, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "k")
    config, store = simulated_lakehouse(spark, tmp_path, users=150, days=20, items_per_leaf=10)
    start, mid, end = date(2024, 1, 1), date(2024, 1, 11), date(2024, 1, 21)

    def load(a: date, b: date):
        _batch, loads = ingest_simulator(spark, config, store, a, b)
        (events,) = [x for x in loads if x.entity == "events"]
        return events

    first = load(start, mid)
    after_first = store.read(EVENTS).count()
    second = load(mid, end)
    assert store.read(EVENTS).count() == after_first + second.new_rows
    assert second.already_loaded_rows == 0  # a rerun of a window loading nothing: test_pipeline's Airflow run
    # Both windows together equal one load of the whole period.
    whole_config, whole_store = simulated_lakehouse(spark, tmp_path / "whole", users=150, days=20, items_per_leaf=10)
    ingest_simulator(spark, whole_config, whole_store, start, end)
    assert same_rows(whole_store.read(EVENTS).drop("load_id"), store.read(EVENTS).drop("load_id"))
    assert first.new_rows + second.new_rows == whole_store.read(EVENTS).count()


def _phenomena(spark: SparkSession, cfg: SimulatorConfig) -> dict[str, float]:
    """Measured in the events: share of complement purchases followed by the partner item, share
    of consumable purchases bought again one cycle on, and for drifted shoppers the share of their
    categorised events in the new interest before and after the drift."""
    import pandas as pd
    from shopper_profiles.ingest.simulator import COMPLEMENTS, CONSUMABLE_LEAVES, CYCLE_DAYS, FOLLOW_UP_HOURS, LEAVES

    end_day = cfg.start_date + timedelta(days=cfg.days)
    end = pd.Timestamp(end_day)
    events = simulate_events(spark, cfg, cfg.start_date, end_day).select(
        "user_id", "ts", "event_type", "item_id", "category").toPandas()
    leaf = events["item_id"].str[1:3].astype(float)
    events["leaf"], events["idx"] = leaf, events["item_id"].str[3:]
    buys, views = events[events.event_type == "purchase"], events[events.event_type == "view"]
    partner = {LEAVES.index(a): LEAVES.index(b) for a, b in COMPLEMENTS.items()}
    seen = set(zip(views.user_id, views.item_id, views.ts, strict=True))
    by_user_item: dict[tuple[str, str], list] = {}
    for u, i, t in seen:
        by_user_item.setdefault((u, i), []).append(t)
    horizon = timedelta(hours=FOLLOW_UP_HOURS[1] + 2)
    followed = [any(timedelta(0) < t - b.ts <= horizon for t in by_user_item.get((b.user_id, f"I{partner[b.leaf]:02d}{b.idx}"), []))
                for b in buys[buys.leaf.isin(partner)].itertuples() if b.ts < end - horizon]
    consumable = buys[buys.leaf.isin(CONSUMABLE_LEAVES)]
    times = buys.groupby(["user_id", "item_id"]).ts.apply(list).to_dict()
    lo, hi = timedelta(days=CYCLE_DAYS[0] - 2), timedelta(days=CYCLE_DAYS[1] + 2)
    again = [any(lo <= t - b.ts <= hi for t in times[(b.user_id, b.item_id)])
             for b in consumable.itertuples() if b.ts < end - hi]
    truth = simulate(spark, cfg).truth.where("drifted_to is not null").select(
        "raw_user_id", "interest_drift_ts", "drifted_to", "top_interests", "interests_before_drift").toPandas()
    # The interest the drift replaced: in the truth before it, not at the cut-off.
    truth["dropped"] = [next(iter(set(b) - set(t)), None) for b, t in zip(truth.interests_before_drift, truth.top_interests,
                                                                          strict=True)]
    drifted = events.merge(truth, left_on="user_id", right_on="raw_user_id").dropna(subset=["category"])
    top_category = drifted.category.str.split(" > ").str[0]
    in_new, in_dropped = top_category == drifted.drifted_to, top_category == drifted.dropped
    after = drifted.ts >= drifted.interest_drift_ts
    return {"complement_followed": float(np.mean(followed)), "replenished": float(np.mean(again)),
            "new_interest_before": float(in_new[~after].mean()), "new_interest_after": float(in_new[after].mean()),
            "dropped_interest_before": float(in_dropped[~after].mean()), "dropped_interest_after": float(in_dropped[after].mean()),
            "truth_before_keeps_two": float(np.mean([len(set(b) & set(t)) == 2 and d not in b for b, t, d in zip(
                truth.interests_before_drift, truth.top_interests, truth.drifted_to, strict=True)])) if len(truth) else float("nan"),
            "truth_has_new_interest": float(np.mean([d in t for d, t in zip(truth.drifted_to, truth.top_interests, strict=True)]))
            if len(truth) else float("nan"),  # no drift planted: nothing to hold
            "drifted_users": float(len(truth))}


def test_planted_phenomena_show_in_the_order_of_events_and_switch_off(spark: SparkSession) -> None:
    on = _phenomena(spark, small(users=300, days=70))
    assert on["complement_followed"] > 0.45, on  # configured 0.6; churn and the window's end cut a few
    assert on["replenished"] > 0.5, on  # configured 0.7
    assert on["drifted_users"] > 60, on  # drift_share 0.4 of 300, minus drift days past the period's end
    assert on["new_interest_before"] < 0.02 < 0.3 < on["new_interest_after"], on
    assert on["truth_has_new_interest"] == 1.0, on  # the truth holds the interests as they stand at the cut-off
    # ... and those before the drift: the same two first interests and the one the drift replaced,
    # which the events leave at the drift.
    assert on["truth_before_keeps_two"] == 1.0, on
    assert on["dropped_interest_after"] < 0.03 < 0.08 < on["dropped_interest_before"], on  # the third interest: ~12 % before
    off = _phenomena(spark, small(users=300, days=70, complement_rate=0.0, replenishment_rate=0.0, drift_share=0.0))
    assert off["complement_followed"] < 0.1 and off["replenished"] < 0.1 and off["drifted_users"] == 0, off


def test_planted_interests_are_judged_as_they_stood_at_d(spark: SparkSession) -> None:
    """A drift on or after D changed no event before D: the evaluation judges that shopper by the
    interests before the drift and does not count them as drifted; a drift before D, by the
    interests after it; a shopper without a drift, by the truth's top 3."""
    import pandas as pd
    from shopper_profiles.model.evaluation import interests_at

    cfg = small(users=300, days=70)
    as_of = cfg.start_date + timedelta(days=45)
    truth = simulate(spark, cfg).truth.select(
        "interest_drift_ts", "drifted_to", "top_interests", "interests_before_drift", *interests_at(as_of)).toPandas()
    drifted = truth[truth.drifted_to.notna()]
    later = drifted[drifted.interest_drift_ts >= pd.Timestamp(as_of)]
    earlier = drifted[drifted.interest_drift_ts < pd.Timestamp(as_of)]
    steady = truth[truth.drifted_to.isna()]
    assert len(later) > 10 and len(earlier) > 10 and len(steady) > 10
    assert all(list(r.truth_top_interests) == list(r.interests_before_drift) and not r.truth_drifted
               for r in later.itertuples())
    assert all(list(r.truth_top_interests) == list(r.top_interests)[:3] and r.drifted_to in r.truth_top_interests
               and r.truth_drifted for r in earlier.itertuples())
    assert steady.interests_before_drift.isna().all() and not steady.truth_drifted.any()
    assert all(list(a) == list(b)[:3] for a, b in zip(steady.truth_top_interests, steady.top_interests, strict=True))


def _social_and_search(spark: SparkSession, cfg: SimulatorConfig) -> dict[str, float]:
    """Measured in the events: share of purchases and shares a neighbour (friend either way, or a
    follower) looks at 20-68 hours later, the share of search-session views of the searched product type, carts per view with and without
    a search, and the share of search sessions whose first item is seen again 20-68 hours later."""
    import pandas as pd
    from shopper_profiles.ingest.simulator import REACTION_HOURS, simulate_items, simulate_social_edges

    end_day = cfg.start_date + timedelta(days=cfg.days)
    events = simulate_events(spark, cfg, cfg.start_date, end_day).select(
        "user_id", "ts", "event_type", "item_id", "query", "session_id").toPandas()
    edges = simulate_social_edges(spark, cfg).toPandas()
    links = set(zip(edges.src_user_id, edges.dst_user_id, strict=True)) | {
        (d, s) for s, d, t in zip(edges.src_user_id, edges.dst_user_id, edges.edge_type, strict=True) if t == "friend"}
    lo, hi = pd.Timedelta(hours=REACTION_HOURS[0] - 1), pd.Timedelta(hours=REACTION_HOURS[1] + 1)
    views = events[events.event_type == "view"]
    viewers = views.groupby("item_id")[["user_id", "ts"]].apply(lambda f: list(zip(f.user_id, f.ts, strict=True))).to_dict()
    acts = events[events.event_type.isin(["purchase", "share"]) & (events.ts < events.ts.max() - hi)]
    linked = [(a.user_id, a.item_id, a.ts) for a in acts.itertuples() for viewer, ts in viewers.get(a.item_id, [])
              if (viewer, a.user_id) in links and lo <= ts - a.ts <= hi]
    items = simulate_items(spark, cfg).select("item_id", "title").toPandas()
    noun = {i: t.lower() for i, t in zip(items.item_id, items.title, strict=True)}
    sessions = events.sort_values("ts").groupby("session_id")
    searched = {s: q.split(" ", 1)[1] for s, q in zip(events.session_id, events["query"], strict=True) if isinstance(q, str)}
    in_search = views[views.session_id.isin(searched)]
    matched = [f" {searched[s]}" in noun[i] for s, i in zip(in_search.session_id, in_search.item_id, strict=True)]
    # Sessions of two or more views are the shoppers' own (follow-ups, returns and influence bring one).
    own = views.session_id.map(views.session_id.value_counts()) >= 2
    carts = events[(events.event_type == "add_to_cart") & events.session_id.isin(views.session_id[own])]
    cart_rate = {flag: (carts.session_id.isin(searched) == flag).sum() / (own & (views.session_id.isin(searched) == flag)).sum()
                 for flag in (True, False)}
    first = {s: (f.user_id.iloc[0], f.item_id.dropna().iloc[0], f.ts.iloc[0]) for s, f in sessions
             if s in searched and f.item_id.notna().any()}
    seen = set(zip(views.user_id, views.item_id, strict=True))
    by_user_item = views.groupby(["user_id", "item_id"]).ts.apply(list).to_dict()
    returned = [any(lo <= t - ts <= hi for t in by_user_item.get((u, i), [])) for u, i, ts in first.values()
                if ts < events.ts.max() - hi and (u, i) in seen]
    return {"influenced": len(set(linked)) / max(len(acts), 1),
            "search_views_of_the_type": float(np.mean(matched)), "search_cart_lift": cart_rate[True] / cart_rate[False],
            "search_returns": float(np.mean(returned))}


def test_friends_influence_and_search_led_sessions_show_in_the_events_and_switch_off(spark: SparkSession) -> None:
    on = _social_and_search(spark, small(users=300, days=40))
    off = _social_and_search(spark, small(users=300, days=40, influence_rate=0.0, search_return_rate=0.0))
    # ~12 neighbours each looking with chance 0.1 (links made during the period see only later actions);
    # without influence, neighbours still meet on popular items by chance (homophily: same interests)
    assert on["influenced"] > off["influenced"] + 0.12 and off["influenced"] < 0.15, (on, off)
    assert on["search_views_of_the_type"] > 0.7, on  # by chance a third
    assert on["search_cart_lift"] > 1.3, on  # planted 1.5
    assert 0.3 < on["search_returns"] < 0.55, on  # planted 0.4
    assert off["search_returns"] < 0.05, off
