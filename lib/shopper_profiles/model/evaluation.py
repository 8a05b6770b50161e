"""Honest evaluation of a registered profile model against traditional profiles, on the test users.

Test users: under a time holdout (the model's training labels end by D) every shopper outside the
validation split -- the model keeps no per-shopper weights and saw nothing of [D, D + horizon), so
the train split's shoppers are test evidence too (demographics, static training labels, stay on the
test split); under a user holdout, the test split only. Validation shoppers choose thresholds.

Every number carries its protocol. The same users, split and labels serve every method:

- next basket (the items bought in [D, D + horizon)): recall@k and NDCG@k over all items, history
  included (reorders are real), same methods as the next item;
- next item (first item touched in [D, D + horizon)): **full** ranking over every item (the
  user's history stays in: repeat views are real next items) beside **sampled100** (the target
  vs 100 uniform items the user never touched); model vs popularity, item co-occurrence, the
  category rule (the rule profile's favourite categories, best sellers first) and repeat buy
  (the user's own most-touched items);
- purchase intent and churn in the next window: AUC, and accuracy / precision / recall / F1 at
  the threshold that maximises F1 on the *validation* users (chosen per method); model vs the
  feature tables' rule scores (``purchase_intent_rule``, RFM recency+frequency,
  ``churn_risk_rule``);
- demographics (age band, gender, where not imputed): accuracy vs the majority class;
- planted truth (simulator only, from the restricted truth table; training never reads it):
  interest top-3 recall, Spearman of price sensitivity, churn AUC, and the truth's purchase
  flag when D is the truth's cut-off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopper_profiles.config import Config
from shopper_profiles.features.build import read_published
from shopper_profiles.features.schemas import need_spec
from shopper_profiles.features.social import neighbours
from shopper_profiles.ingest.bronze import EVENTS, PLANTED_TRUTH, SOCIAL_EDGES
from shopper_profiles.model import baselines
from shopper_profiles.model.build import snapshot_examples
from shopper_profiles.model.dataset import FIRST_ITEM
from shopper_profiles.model.inputs import BATCH_COLUMNS
from shopper_profiles.model.metrics import (
    auc,
    basket_metrics,
    binary_report,
    full_ranks,
    hit_rate,
    multiclass_accuracy,
    ndcg,
    ranking_report,
    sampled_ranks,
    spearman,
    top_k_recall,
)
from shopper_profiles.model.network import predict
from shopper_profiles.model.registry import RegisteredModel, load_model_once, use_experiment
from shopper_profiles.storage import DeltaStore, TableSpec

logger = logging.getLogger(__name__)

EVALUATION = TableSpec(
    "model_evaluation",
    T.StructType([
        T.StructField("as_of", T.DateType(), False), T.StructField("model_uri", T.StringType(), False),
        T.StructField("model_version", T.StringType(), True), T.StructField("method", T.StringType(), False),
        T.StructField("task", T.StringType(), False), T.StructField("metric", T.StringType(), False),
        T.StructField("protocol", T.StringType(), False), T.StructField("value", T.DoubleType(), True),
        T.StructField("users", T.LongType(), False), T.StructField("evaluated_at", T.TimestampType(), False),
    ]),
    keys=("as_of", "model_uri", "method", "task", "metric", "protocol"),
    description="Test-user metrics of a model and the traditional baselines, one row per number, protocol beside it.",
)

FULL = "full ranking over all items, history included"
SAMPLED = "target vs 100 uniform unseen negatives"
BASKET = "items bought in [D, D + horizon), full ranking over all items, history included; recall = share of the basket in the top k"
BINARY = "test users; threshold maximising F1 on validation users"


class Results:
    """The rows of the evaluation table, collected as they are measured, and per headline method
    the per-user evidence behind them (for paired bootstrap intervals over the same users)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.samples: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}

    def add(self, method: str, task: str, metrics: dict[str, float], protocol: str, users: int,
            sample: dict[str, np.ndarray] | None = None) -> None:
        """``sample``: per-user ``ranks``, or ``labels`` + ``scores``, or ``values`` (a per-user metric)."""
        for metric, value in metrics.items():
            self.rows.append({"method": method, "task": task, "metric": metric, "protocol": protocol,
                              "value": None if value is None or math.isnan(value) else float(value), "users": int(users)})
        if sample is not None:
            self.samples[(method, task, protocol)] = sample

    def value(self, method: str, task: str, metric: str, protocol: str | None = None) -> float | None:
        """The first measured value of ``method`` for (task, metric), optionally under ``protocol``."""
        return next((r["value"] for r in self.rows if (r["method"], r["task"], r["metric"]) == (method, task, metric)
                     and (protocol is None or r["protocol"] == protocol)), None)

    def protocol_of(self, method: str, task: str, metric: str) -> str | None:
        return next((r["protocol"] for r in self.rows if (r["method"], r["task"], r["metric"]) == (method, task, metric)), None)


def statistic(sample: dict[str, np.ndarray], metric: str, rows: np.ndarray) -> float:
    """``metric`` recomputed on the users ``rows`` of a per-user sample."""
    if "ranks" in sample:
        name, _, k = metric.partition("@")
        ranks = sample["ranks"][rows]
        return hit_rate(ranks, int(k)) if name == "hr" else ndcg(ranks, int(k))
    if "labels" in sample:
        return auc(sample["labels"][rows], sample["scores"][rows])
    if metric in sample:  # per-user values of several metrics (e.g. a basket's recall@k and ndcg@k)
        return float(np.mean(sample[metric][rows]))
    return float(np.mean(sample["values"][rows]))


def paired_intervals(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], metric: str, seed: int = 0,
                     resamples: int = 1000) -> dict[str, tuple[float, float]]:
    """95 % percentile bootstrap intervals (``scipy.stats.bootstrap``) of both methods' metric and of
    their ratio, resampling the *same* users for both (paired)."""
    from scipy.stats import bootstrap

    def both(idx: np.ndarray) -> np.ndarray:
        rows = idx.astype(int)
        mine, base = statistic(ours, metric, rows), statistic(theirs, metric, rows)
        return np.array([mine, base, mine / base if base else np.nan])

    users = np.arange(len(next(iter(ours.values()))))
    found = bootstrap((users,), both, vectorized=False, paired=True, n_resamples=resamples, method="percentile",
                      random_state=seed)
    low, high = found.confidence_interval
    return {name: (float(low[i]), float(high[i])) for i, name in enumerate(("profile_model", "traditional", "ratio"))}


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score cut that maximises F1 (ties: the higher cut), from sklearn's precision-recall curve."""
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels).astype(bool)
    if not labels.any() or labels.all():
        return 0.5
    precision, recall, cuts = precision_recall_curve(labels, np.asarray(scores, dtype=np.float64))
    total = precision[:-1] + recall[:-1]
    f1 = np.divide(2 * precision[:-1] * recall[:-1], total, out=np.zeros_like(total), where=total > 0)
    best = np.flatnonzero(f1 == f1.max())[-1]  # cuts ascend: the last maximum is the highest cut
    return float(cuts[best])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _histories(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [row[row >= FIRST_ITEM] for row in arrays["item_seq"]]


PHENOMENA = {  # planted phenomenon -> who is judged on it and what counts (simulator only)
    "complement_follow_up": "test users with a next item whose latest purchase has a complement; hit = its partner "
                            "item in the method's top 10",
    "replenishment": "test users with a next item whose latest purchase is a consumable; hit = that item in the "
                     "method's top 10",
    "friend_influence": "test users with a next item whose friend or followed account bought or shared an item in "
                        "the 68 h before D; hit = the latest such item in the method's top 10",
    "search_return": "test users with a next item who opened a session with a search in the 68 h before D; hit = "
                     "that session's first item in the method's top 10",
}


def planted_cues(test: dict[str, np.ndarray], item_ids: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Simulator only: per test user, the item a planted phenomenon says comes next after the
    latest purchase in the sequence (-1 none): its complement's partner item, or the consumable
    itself (replenishment)."""
    from shopper_profiles.ingest.bronze import EVENT_TYPES
    from shopper_profiles.ingest.simulator import complement_of, is_consumable

    token = {item: i for i, item in enumerate(item_ids)}
    purchase = EVENT_TYPES.index("purchase") + 1
    cues = {"complement_follow_up": np.full(len(test["item_seq"]), -1), "replenishment": np.full(len(test["item_seq"]), -1)}
    for row, (items, types) in enumerate(zip(test["item_seq"], test["type_seq"], strict=True)):
        bought = np.flatnonzero((types == purchase) & (items >= FIRST_ITEM))
        if not len(bought):
            continue
        item = item_ids[int(items[bought[-1]])]
        if item is None:
            continue
        partner = complement_of(item)
        if partner is not None and partner in token:
            cues["complement_follow_up"][row] = token[partner]
        if is_consumable(item):
            cues["replenishment"][row] = int(items[bought[-1]])
    return cues


def social_and_search_cues(spark: SparkSession, store: DeltaStore, as_of: date, users: Sequence[str],
                           item_ids: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Simulator only: per shopper, the item friends' influence and a search-led return point at on
    D (-1 none): the latest item a friend or followed account bought or shared in the reaction
    window before D, and the first item of the shopper's latest search-led session in it."""
    from shopper_profiles.ingest.simulator import REACTION_HOURS

    start = datetime.combine(as_of, datetime.min.time()) - timedelta(hours=REACTION_HOURS[1])
    cut = F.lit(as_of).cast("timestamp")
    recent = store.read(EVENTS).where(
        (F.col("event_date") >= F.lit(start.date())) & (F.col("ts") >= F.lit(start)) & (F.col("ts") < cut))
    links = neighbours(store.read(SOCIAL_EDGES).where(F.col("ts") < cut))
    acts = recent.where(F.col("event_type").isin("purchase", "share")).select(
        F.col("user_id").alias("neighbour_id"), "item_id", "ts")
    influenced = acts.join(links, "neighbour_id").groupBy("user_id").agg(F.max_by("item_id", "ts").alias("item_id"))
    searched = recent.where(F.col("event_type") == "search").groupBy("user_id", "session_id").agg(F.min("ts").alias("ts"))
    first_seen = recent.where(F.col("item_id").isNotNull()).groupBy("session_id").agg(
        F.min_by("item_id", "ts").alias("item_id"))
    returned = searched.join(first_seen, "session_id").groupBy("user_id").agg(F.max_by("item_id", "ts").alias("item_id"))
    token = {item: i for i, item in enumerate(item_ids)}
    row = {u: i for i, u in enumerate(users)}
    cues = {}
    for name, frame in (("friend_influence", influenced), ("search_return", returned)):
        cue = np.full(len(users), -1)
        for r in frame.join(_users_frame(spark, users), "user_id").collect():
            cue[row[r["user_id"]]] = token.get(r["item_id"], -1)
        cues[name] = cue
    return cues


def ranking_results(results: Results, test: dict[str, np.ndarray], logits: np.ndarray, fit_histories: list[np.ndarray],
                    item_category: np.ndarray, n_categories: int, seed: int,
                    cues: dict[str, np.ndarray] | None = None) -> None:
    """Every method scores every item once per test user; the scores are judged on the next item
    (full and sampled), on the next basket (the items bought in the window) and, with ``cues``
    (simulator), on how often a planted phenomenon's item lands in the top 10."""
    histories = _histories(test)
    n_items = logits.shape[1]
    pop = baselines.popularity(fit_histories, n_items, FIRST_ITEM)
    scorers: dict[str, Callable[[], np.ndarray]] = {
        "profile_model": lambda: logits.astype(np.float64),
        "popularity": lambda: baselines.popularity_scores(pop, len(histories)),
        "item_cooccurrence": lambda: baselines.cooccurrence_scores(
            baselines.cooccurrence(fit_histories, n_items, first_item=FIRST_ITEM), pop, histories, first_item=FIRST_ITEM),
        "category_rule": lambda: baselines.category_rule_scores(
            item_category, pop, baselines.category_shares(histories, item_category, n_categories, FIRST_ITEM)),
        "repeat_buy": lambda: baselines.repeat_scores(pop, histories, FIRST_ITEM),
    }
    has_next = np.flatnonzero(test["next_item"] >= 0)
    targets = test["next_item"][has_next]
    bought = np.flatnonzero([len(b) > 0 for b in test["next_basket"]])
    for method, score in scorers.items():
        scores = score()
        scores[:, :FIRST_ITEM] = -np.inf  # padding and mask are never recommendations
        if len(has_next):
            ranks = full_ranks(scores[has_next], targets)
            results.add(method, "next_item", ranking_report(ranks), FULL, len(targets), {"ranks": ranks})
            sampled = sampled_ranks(scores[has_next], targets, exclude=[histories[i] for i in has_next], n_negatives=100,
                                    seed=seed, first_item=FIRST_ITEM)
            results.add(method, "next_item", ranking_report(sampled), SAMPLED, len(targets), {"ranks": sampled})
        if len(bought):
            per_user = basket_metrics(scores[bought], [test["next_basket"][i] for i in bought])
            results.add(method, "next_basket", {k: float(v.mean()) for k, v in per_user.items()}, BASKET, len(bought),
                        per_user)
        for phenomenon, planted in (cues or {}).items():
            rows = np.flatnonzero((planted >= 0) & (test["next_item"] >= 0))
            if len(rows):
                top = np.argpartition(-scores[rows], 10, axis=1)[:, :10]
                hits = (top == planted[rows][:, None]).any(axis=1).astype(np.float64)
                results.add(method, f"planted_{phenomenon}", {"top10_hit": float(hits.mean())}, PHENOMENA[phenomenon], len(rows),
                            {"values": hits})


def binary_results(results: Results, task: str, candidates: dict[str, tuple[np.ndarray, np.ndarray]],
                   validation_labels: np.ndarray, test_labels: np.ndarray) -> None:
    """``candidates``: method -> (validation scores, test scores)."""
    for method, (val_scores, test_scores) in candidates.items():
        cut = best_threshold(validation_labels, val_scores)
        report = binary_report(test_labels, test_scores, threshold=cut)
        results.add(method, task, report, BINARY, len(test_labels), {"labels": test_labels, "scores": test_scores})


def _users_frame(spark: SparkSession, users: Sequence[str] | np.ndarray) -> DataFrame:
    """The given user ids as a one-column frame to join on (numpy strings made plain)."""
    return F.broadcast(spark.createDataFrame([(str(u),) for u in users], "user_id string"))


def _need_rules(spark: SparkSession, store: DeltaStore, as_of: date, users: Sequence[str]) -> dict[str, dict[str, Any]]:
    (need,) = read_published(store, [need_spec()], as_of)
    rows = need.join(_users_frame(spark, users), "user_id").select(
        "user_id", "purchase_intent_rule", "churn_risk_rule", "r_score", "f_score", "paid_vs_category_median_90d",
        "category_affinity_90d").collect()
    return {r["user_id"]: r.asDict() for r in rows}


def _rule_vector(rules: dict[str, dict[str, Any]], users: np.ndarray, name: str, fill: float = 0.0) -> np.ndarray:
    values = (rules.get(u, {}).get(name) for u in users)
    return np.asarray([fill if v is None else v for v in values], dtype=np.float64)


def frame_arrays(frame: DataFrame) -> dict[str, np.ndarray]:
    """A (small) frame as numpy columns, fixed-length list columns stacked, rows in user order."""
    table: Any = frame.orderBy("user_id").toPandas()
    out: dict[str, np.ndarray] = {}
    for name in table.columns:
        values = table[name].to_numpy()
        if len(values) and isinstance(values[0], np.ndarray | list):
            rows = [np.asarray(v) for v in values]
            ragged = len({len(r) for r in rows}) > 1  # variable-length lists (baskets) stay one array per row
            values = np.array(rows + [None], dtype=object)[:-1] if ragged else np.stack(rows)
        out[name] = values
    return out


def evaluate_snapshot(spark: SparkSession, store: DeltaStore, config: Config, as_of: date, model_alias: str | None = None,
                      model_version: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Score the test users of snapshot D = ``as_of`` with the registered model (a version, an alias,
    default the champion), compute every baseline on the same users, write the evaluation table and
    an MLflow run, and return the report.

    The evaluation set is built here from D's feature tables and the labels of [D, D + horizon),
    tokenised with the *model's* vocabulary, so a model trained on an earlier snapshot is evaluated
    on a later window: **time holdout** when its training labels end by D (the model has seen
    nothing of the test window, like the baselines, which are fitted on pre-D histories only);
    otherwise **user holdout** (the model's train users' labels share the test window, and the
    report says so). A model trained on a snapshot later than D, or on another vocabulary, is refused."""
    registered = RegisteredModel.resolve(config, model_alias, model_version)
    vocabulary = registered.usable_vocabulary(store, as_of)
    snapshot = vocabulary.snapshot
    horizon = config.model.horizon_days
    time_holdout = snapshot + timedelta(days=horizon) <= as_of
    holdout = (f"time holdout: the model's training labels end at {snapshot + timedelta(days=horizon)}, on or before D; "
               "evaluated on every shopper outside the validation split (training saw no label of the test window; "
               "demographics, which never change, on the test split only)" if time_holdout else
               f"user holdout: the model's training users' labels [{snapshot}, {snapshot + timedelta(days=horizon)}) "
               "overlap the test window; evaluated on the test split only")
    max_len = int(registered.spec.get("max_len", config.model.max_len))
    data = frame_arrays(snapshot_examples(spark, store, config, as_of, vocabulary, max_len).select(*BATCH_COLUMNS, "next_basket"))
    split = data["split"]
    # Under a time holdout the train split's shoppers are as unseen in the test window as the test
    # split's (the model keeps no per-shopper weights): ten times the evidence, tighter intervals.
    evaluated = (split != "validation") if time_holdout else (split == "test")
    test = {k: v[evaluated] for k, v in data.items()}
    validation = {k: v[split == "validation"] for k, v in data.items()}
    if not len(test["user_id"]) or not len(validation["user_id"]):
        raise ValueError(f"snapshot {as_of} has {len(test['user_id'])} test and {len(validation['user_id'])} "
                         "validation users; evaluation needs both (more users, or a later snapshot)")

    model_uri, version = registered.uri, registered.version
    model = load_model_once(config.mlflow_tracking_uri, model_uri)
    out_test, out_val = predict(model, test), predict(model, validation)

    item_category = vocabulary.item_category
    category_names = dict(enumerate(vocabulary.categories))
    n_categories = out_test["interest_logits"].shape[1]

    results = Results()
    # Pre-D histories of every user fit the baselines: all of it is known at D.
    cues = ({**planted_cues(test, vocabulary.item_ids),
             **social_and_search_cues(spark, store, as_of, list(test["user_id"]), vocabulary.item_ids)}
            if _has_truth(store) else None)
    ranking_results(results, test, out_test["next_item_logits"], _histories(data), item_category, n_categories, seed, cues)

    rules = _need_rules(spark, store, as_of, [*test["user_id"], *validation["user_id"]])

    def rule(name: str, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        return _rule_vector(rules, validation["user_id"], name, fill), _rule_vector(rules, test["user_id"], name, fill)

    (r_val, r_test), (f_val, f_test) = rule("r_score"), rule("f_score")
    binary_results(results, "purchase_next_window", {
        "profile_model": (_sigmoid(out_val["intent_logit"]), _sigmoid(out_test["intent_logit"])),
        "intent_rule": rule("purchase_intent_rule"), "rfm_rule": ((r_val + f_val) / 10, (r_test + f_test) / 10),
    }, validation["purchase_next"], test["purchase_next"])
    binary_results(results, "churn_next_window", {
        "profile_model": (_sigmoid(out_val["churn_logit"]), _sigmoid(out_test["churn_logit"])),
        "churn_rule": rule("churn_risk_rule"),
    }, validation["churn_next"], test["churn_next"])

    train_rows = split == "train"
    for task, label, logits_key in (("age_band", "age_label", "age_logits"), ("gender", "gender_label", "gender_logits")):
        known = (test[label] >= 0) & (test["split"] == "test")  # a train shopper's demographics were training labels
        if not known.any():
            continue
        stated = np.where(known, test[label], -1)
        results.add("profile_model", task, {"accuracy": multiclass_accuracy(stated, _softmax(out_test[logits_key]))},
                    "test users with a stated (not imputed) value", int(known.sum()))
        train_labels = data[label][train_rows]
        majority = np.bincount(train_labels[train_labels >= 0]).argmax() if (train_labels >= 0).any() else 0
        results.add("majority_class", task, {"accuracy": float((stated[known] == majority).mean())},
                    "test users with a stated (not imputed) value; majority of train users", int(known.sum()))

    truth = _truth_results(results, spark, store, as_of, test, out_test, rules, category_names)
    evaluated_at = datetime.now(UTC).replace(tzinfo=None)
    rows = [{**r, "as_of": as_of, "model_uri": model_uri, "model_version": version, "evaluated_at": evaluated_at}
            for r in results.rows]
    store.create(EVALUATION)
    frame = spark.createDataFrame([tuple(r[f] for f in EVALUATION.schema.fieldNames()) for r in rows], EVALUATION.schema)
    merged = store.merge(frame, EVALUATION)
    heads = headline(results, seed)
    text = markdown(results, heads, as_of, model_uri, holdout)
    report: dict[str, Any] = {"as_of": str(as_of), "model_uri": model_uri, "model_version": version, "holdout": holdout,
              "trained_on": str(snapshot), "test_users": len(test["user_id"]),
              "validation_users": len(validation["user_id"]), "planted_truth": truth, "rows": len(rows),
              "table_version": store.version(EVALUATION), "merge": str(merged), "headline": heads, "results": results.rows,
              "markdown": text}
    report["mlflow_run_id"] = _log_run(config, as_of, model_uri, version, results, heads, text, holdout)
    return report


def _has_truth(store: DeltaStore) -> bool:
    """The simulator plants a truth; real sources leave the table empty (or absent)."""
    return store.exists(PLANTED_TRUTH) and store.read(PLANTED_TRUTH).limit(1).count() > 0


def _truth_results(results: Results, spark: SparkSession, store: DeltaStore, as_of: date, test: dict[str, np.ndarray],
                   out_test: dict[str, np.ndarray], rules: dict[str, dict[str, Any]], category_names: dict[int, str]) -> bool:
    """Planted-truth recovery on the simulator; False when there is no truth (real data)."""
    if not _has_truth(store):
        return False
    truth = {r["user_id"]: r for r in store.read(PLANTED_TRUTH).join(_users_frame(spark, test["user_id"]), "user_id").collect()}
    index = [i for i, u in enumerate(test["user_id"]) if u in truth]
    if not index:
        return False
    users = [test["user_id"][i] for i in index]
    true_top = [list(truth[u]["top_interests"][:3]) for u in users]
    order = np.argsort(-out_test["interest_logits"][index], axis=1)[:, :3]
    model_top = [[category_names.get(int(c), "?") for c in row] for row in order]

    def rule_top(user: str) -> list[str]:
        affinity = rules.get(user, {}).get("category_affinity_90d") or {}
        return [c for c, _ in sorted(affinity.items(), key=lambda kv: (-kv[1], kv[0]))][:3]

    protocol = "test users vs the simulator's planted truth (restricted table, never used in training)"
    n = len(users)
    drifted = np.asarray([truth[u]["drifted_to"] is not None for u in users])
    for method, predicted in (("profile_model", model_top), ("category_rule", [rule_top(u) for u in users])):
        per_user = np.asarray([top_k_recall([t], [p], 3) for t, p in zip(true_top, predicted, strict=True)])
        results.add(method, "truth_interests", {"top3_recall": top_k_recall(true_top, predicted, 3)}, protocol, n,
                    {"values": per_user})
        if drifted.any():  # shoppers whose interests moved inside the period: recency matters here
            results.add(method, "truth_interests_drifted", {"top3_recall": float(per_user[drifted].mean())},
                        protocol + "; shoppers with a planted interest drift", int(drifted.sum()),
                        {"values": per_user[drifted]})
    sensitivity = np.asarray([truth[u]["price_sensitivity"] for u in users])
    # Sensitive shoppers pay less than the category median: the estimate is minus the paid ratio.
    paid_rule = np.asarray([rules.get(u, {}).get("paid_vs_category_median_90d") for u in users], dtype=object)
    has_rule = np.asarray([v is not None for v in paid_rule])
    model_estimate = -out_test["price"][index]
    results.add("profile_model", "truth_price_sensitivity", {"spearman": spearman(sensitivity, model_estimate)},
                protocol + "; all test users", n)
    if has_rule.sum() > 2:
        rule_estimate = -paid_rule[has_rule].astype(np.float64)
        results.add("profile_model", "truth_price_sensitivity",
                    {"spearman": spearman(sensitivity[has_rule], model_estimate[has_rule])},
                    protocol + "; users with a purchase (where the rule exists)", int(has_rule.sum()))
        results.add("price_rule", "truth_price_sensitivity", {"spearman": spearman(sensitivity[has_rule], rule_estimate)},
                    protocol + "; users with a purchase (where the rule exists)", int(has_rule.sum()))
    churned = np.asarray([bool(truth[u]["churned"]) for u in users])
    for method, scores in (("profile_model", _sigmoid(out_test["churn_logit"][index])),
                           ("churn_rule", _rule_vector(rules, np.asarray(users), "churn_risk_rule"))):
        results.add(method, "truth_churned", {"auc": auc(churned, scores)}, protocol, n, {"labels": churned, "scores": scores})
    cutoff = truth[users[0]]["truth_cutoff"]
    if cutoff == as_of:
        buys = np.asarray([bool(truth[u]["will_purchase_next_window"]) for u in users])
        results.add("profile_model", "truth_purchase", {"auc": auc(buys, _sigmoid(out_test["intent_logit"][index]))}, protocol, n)
        results.add("intent_rule", "truth_purchase",
                    {"auc": auc(buys, _rule_vector(rules, np.asarray(users), "purchase_intent_rule"))}, protocol, n)
    return True


HEADLINES = (  # (task, metric, protocol, best traditional competitors)
    ("next_item", "ndcg@10", FULL, ("popularity", "item_cooccurrence", "category_rule", "repeat_buy")),
    ("next_item", "ndcg@10", SAMPLED, ("popularity", "item_cooccurrence", "category_rule", "repeat_buy")),
    ("next_basket", "recall@20", BASKET, ("popularity", "item_cooccurrence", "category_rule", "repeat_buy")),
    ("purchase_next_window", "auc", BINARY, ("intent_rule", "rfm_rule")),
    ("churn_next_window", "auc", BINARY, ("churn_rule",)),
    ("truth_interests", "top3_recall", None, ("category_rule",)),
    ("truth_churned", "auc", None, ("churn_rule",)),
    ("truth_interests_drifted", "top3_recall", None, ("category_rule",)),
    *((f"planted_{name}", "top10_hit", protocol, ("popularity", "item_cooccurrence", "category_rule", "repeat_buy"))
      for name, protocol in PHENOMENA.items()),
)


def headline(results: Results, seed: int = 0) -> list[dict[str, Any]]:
    """Model vs the best traditional method per task: the measured ratio, whichever way it goes,
    with 95 % paired bootstrap intervals (same test users resampled for both methods)."""
    out = []
    for task, metric, protocol, rivals in HEADLINES:
        ours = results.value("profile_model", task, metric, protocol)
        scored = [(m, v) for m in rivals if (v := results.value(m, task, metric, protocol)) is not None]
        if ours is None or not scored:
            continue
        best_name, best = max(scored, key=lambda mv: mv[1] or 0.0)
        row: dict[str, Any] = {"task": task, "metric": metric, "protocol": protocol or "planted truth", "profile_model": ours,
                               "best_traditional": best_name, "traditional": best, "ratio": (ours / best) if best else None}
        where = protocol or results.protocol_of("profile_model", task, metric) or ""
        ours_sample, theirs_sample = results.samples.get(("profile_model", task, where)), results.samples.get(
            (best_name, task, where))
        users = len(next(iter(ours_sample.values()))) if ours_sample else 0
        if ours_sample is not None and theirs_sample is not None and users >= 2:  # a bootstrap needs two users
            row["intervals"] = paired_intervals(ours_sample, theirs_sample, metric, seed)
        out.append(row)
    return out


def _interval(row: dict[str, Any], key: str, fmt: str = ".4f") -> str:
    found = row.get("intervals", {}).get(key)
    return f" [{found[0]:{fmt}}, {found[1]:{fmt}}]" if found else ""


def markdown(results: Results, heads: list[dict[str, Any]], as_of: date, model_uri: str, holdout: str) -> str:
    lines = [f"# Profile model evaluation, snapshot {as_of}", "", f"Model: `{model_uri}`; protocol: {holdout}.", "",
             "| task | metric | protocol | method | value | users |", "|---|---|---|---|---|---|"]
    for r in results.rows:
        value = "n/a" if r["value"] is None else f"{r['value']:.4f}"
        lines.append(f"| {r['task']} | {r['metric']} | {r['protocol']} | {r['method']} | {value} | {r['users']:,} |")
    lines += ["", "## Model vs the best traditional method (95 % paired bootstrap intervals over the test users)", "",
              *headline_table(heads)]
    return "\n".join(lines) + "\n"


def headline_table(heads: Sequence[dict[str, Any]]) -> list[str]:
    """The headline rows as a Markdown table, each value with its 95 % paired bootstrap interval."""
    lines = ["| task | metric | protocol | profile model | best traditional | value | ratio |", "|---|---|---|---|---|---|---|"]
    for h in heads:
        ratio = "n/a" if h["ratio"] is None else f"{h['ratio']:.2f}x{_interval(h, 'ratio', '.2f')}"
        lines.append(f"| {h['task']} | {h['metric']} | {h['protocol']} | {h['profile_model']:.4f}{_interval(h, 'profile_model')} | "
                     f"{h['best_traditional']} | {h['traditional']:.4f}{_interval(h, 'traditional')} | {ratio} |")
    return lines


def _log_run(config: Config, as_of: date, model_uri: str, version: str | None, results: Results,
             heads: list[dict[str, Any]], text: str, holdout: str) -> str:
    """One MLflow run per evaluation (metrics, the Markdown table, the headline plot); the model
    version it judged is tagged with it, so the version's page in the UI links to its evidence."""
    import mlflow

    from shopper_profiles.model.plots import headline_plot
    from shopper_profiles.model.tracking import mlflow_name

    use_experiment(config.mlflow_tracking_uri, config.mlflow.experiment)
    with mlflow.start_run(run_name=f"evaluation-{as_of}") as run:
        mlflow.set_tags({"kind": "evaluation", "model_uri": model_uri, "model_version": str(version), "as_of": str(as_of),
                         "holdout": holdout})
        metrics = {}
        for r in results.rows:
            if r["value"] is not None:
                protocol = "sampled100" if r["protocol"] == SAMPLED else "full" if r["protocol"] == FULL else ""
                key = ".".join(x for x in (r["method"], r["task"], protocol, r["metric"]) if x)
                metrics[mlflow_name(key)] = r["value"]
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "evaluation.md"
            path.write_text(text)
            mlflow.log_artifact(str(path))
            (Path(folder) / "evaluation.json").write_text(json.dumps(results.rows, default=str))
            mlflow.log_artifact(os.path.join(folder, "evaluation.json"))
            headline_plot(heads, Path(folder) / "evaluation.png")
            mlflow.log_artifact(os.path.join(folder, "evaluation.png"))
        if version is not None:
            mlflow.MlflowClient().set_model_version_tag(config.mlflow.registered_model, str(version),
                                                        f"evaluation_{as_of}", run.info.run_id)
        return str(run.info.run_id)
