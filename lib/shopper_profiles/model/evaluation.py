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
  interest top-3 recall (the interests as they stood at D: a drift after D changed no event a
  profile at D reads), Spearman of price sensitivity, churn AUC, and the truth's purchase flag
  when D is the truth's cut-off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopper_profiles.config import Config
from shopper_profiles.features.build import read_published
from shopper_profiles.features.schemas import behaviour_spec, need_spec
from shopper_profiles.features.social import neighbours
from shopper_profiles.ingest.bronze import EVENTS, PLANTED_TRUTH, SOCIAL_EDGES
from shopper_profiles.model import baselines
from shopper_profiles.model.build import is_time_holdout, snapshot_examples
from shopper_profiles.model.dataset import FIRST_ITEM
from shopper_profiles.model.inputs import BATCH_COLUMNS
from shopper_profiles.model.metrics import (
    auc,
    basket_metrics,
    binary_report,
    found_share,
    full_ranks,
    paired_intervals,
    ranking_report,
    ranks_among,
    spearman,
    top_k_recall,
    unseen_negatives,
)
from shopper_profiles.model.network import predict
from shopper_profiles.model.registry import RegisteredModel, load_model_once, use_experiment
from shopper_profiles.model.vocabulary import Vocabulary
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
PRICE_LEVEL = "test users with a priced event in [D, D + horizon); Spearman of the estimate with that window's price level"


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


def social_and_search_cues(spark: SparkSession, store: DeltaStore, as_of: date) -> dict[str, DataFrame]:
    """Simulator only: per shopper (user_id, item_id), the item friends' influence and a search-led
    return point at on D: the latest item a friend or followed account bought or shared in the
    reaction window before D, and the first item of the shopper's latest search-led session in it."""
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
    return {"friend_influence": influenced, "search_return": returned}


RULES = ("purchase_intent_rule", "churn_risk_rule", "r_score", "f_score", "paid_vs_category_median_90d",
         "item_price_level_90d")
TRUTH_COLUMNS = ("truth_known", "truth_top_interests", "truth_drifted", "truth_price_sensitivity", "truth_churned",
                 "truth_purchase", "truth_cutoff")


def evaluation_frame(spark: SparkSession, store: DeltaStore, config: Config, as_of: date, vocabulary: Vocabulary,
                     max_len: int, truth: bool) -> DataFrame:
    """Everything the evaluation reads per shopper at D, in one frame for the executors to
    materialise: the model's inputs and labels (``vocabulary``'s tokens), the need table's rule
    scores and top-3 rule categories (affinity descending, then name) and, on the simulator, the
    planted truth and the tokens friends' influence and a search-led return point at."""
    examples = snapshot_examples(spark, store, config, as_of, vocabulary, max_len).select(*BATCH_COLUMNS, "next_basket")
    need, behaviour = read_published(store, [need_spec(), behaviour_spec(config.features)], as_of)

    def top3(shares: str) -> Column:  # a category map's three largest (ties by name)
        ranked = F.sort_array(F.transform(F.map_entries(shares),
                                          lambda e: F.struct((-e["value"]).alias("share"), e["key"].alias("category"))))
        return F.slice(F.transform(ranked, lambda e: e["category"]), 1, 3)

    rules = need.select("user_id", *RULES, top3("category_affinity_90d").alias("rule_top_interests")).join(
        behaviour.select("user_id", top3("category_share_90d").alias("share_top_interests"),
                         F.map_keys("category_share_90d").alias("touched_categories_90d")), "user_id", "left")
    frame = examples.join(rules, "user_id", "left")
    if not truth:
        return frame
    planted = store.read(PLANTED_TRUTH)
    if "interests_before_drift" not in planted.columns:
        raise ValueError(f"{store.path(PLANTED_TRUTH)} was written before the truth kept the interests before a "
                         "drift; rerun the ingest step (jobs/run_pipeline.py --steps ingest,...) to rewrite it")
    planted = planted.select(
        "user_id", F.lit(True).alias("truth_known"), *interests_at(as_of), F.col("price_sensitivity").alias("truth_price_sensitivity"),
        F.col("churned").alias("truth_churned"), F.col("will_purchase_next_window").alias("truth_purchase"), "truth_cutoff")
    frame = frame.join(planted, "user_id", "left")
    tokens = vocabulary.frame(spark).select("item_id", "item_idx")
    for name, cue in social_and_search_cues(spark, store, as_of).items():
        frame = frame.join(cue.join(tokens, "item_id").select("user_id", F.col("item_idx").alias(f"{name}_item")), "user_id",
                           "left")
    return frame


def interests_at(as_of: date) -> tuple[Column, Column]:
    """The planted top 3 as they stood at D, and whether a drift had moved them by then. A drift on
    or after D changes no event before D, so no profile at D can know it: such a shopper is judged on
    the interests before the drift (the truth table's ``top_interests`` stand at the period's end)."""
    at_d = F.lit(as_of).cast("timestamp")
    top = F.when(F.col("interest_drift_ts") >= at_d, F.col("interests_before_drift")).otherwise(F.col("top_interests"))
    return (F.slice(top, 1, 3).alias("truth_top_interests"),
            F.coalesce(F.col("interest_drift_ts") < at_d, F.lit(False)).alias("truth_drifted"))


def _numpy(column: Any) -> np.ndarray:
    """One Arrow column as numpy: equal-length lists stacked into a matrix, ragged lists one array
    (None where null) per row, nullable numbers as float with NaN."""
    import pyarrow as pa

    if pa.types.is_list(column.type):
        lengths = column.value_lengths().to_numpy(zero_copy_only=False)
        if column.null_count == 0 and len(lengths) and (lengths == lengths[0]).all():
            return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), int(lengths[0]))
        out = np.empty(len(column), dtype=object)
        out[:] = [None if v is None else np.asarray(v) for v in column.to_pylist()]
        return out
    return column.to_numpy(zero_copy_only=False)


def chunks(folder: str, rows: int, columns: Sequence[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The Parquet files under ``folder`` (in file order: a sorted write keeps user order) as numpy
    chunks of at most ``rows`` shoppers: the driver never holds more than one chunk."""
    import pyarrow.parquet as pq

    for path in sorted(Path(folder).glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=list(columns) if columns else None):
            if batch.num_rows:
                yield {name: _numpy(batch.column(name)) for name in batch.schema.names}


BYTES_PER_CELL = 40  # per shopper x item of a chunk: the model's float32 logits, one method's float64 scores, copies, masks


def chunk_rows(n_items: int, memory_mb: float) -> int:
    """Shoppers per evaluation chunk: as many as fit ``memory_mb`` of users x items working set (at least 16)."""
    return max(16, int(memory_mb * 2**20) // (n_items * BYTES_PER_CELL))


class Gathered:
    """Per-shopper columns gathered chunk by chunk (a few scalars per shopper, no users x items)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def put(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.parts.setdefault(name, []).append(np.asarray(values))

    def __getitem__(self, name: str) -> np.ndarray:
        return np.concatenate(self.parts[name]) if name in self.parts else np.zeros(0)

    def __len__(self) -> int:
        return sum(len(p) for p in next(iter(self.parts.values()), []))


class RankingEvidence:
    """What the ranking tasks judge, per method and shopper, gathered chunk by chunk: every method
    scores every item for a chunk's shoppers, the chunk is judged on the next item (full, and
    sampled against negatives every method shares), the next basket and, with cues (simulator), the
    planted phenomena, and its users x items scores are dropped before the next chunk."""

    METHODS = ("profile_model", "popularity", "item_cooccurrence", "category_rule", "repeat_buy")

    def __init__(self, pop: np.ndarray, cooccurrence: Any, item_category: np.ndarray, n_categories: int, seed: int) -> None:
        self.pop, self.cooccurrence, self.item_category, self.n_categories, self.seed = (
            pop, cooccurrence, item_category, n_categories, seed)
        self.full = {m: Gathered() for m in self.METHODS}
        self.sampled = {m: Gathered() for m in self.METHODS}
        self.basket = {m: Gathered() for m in self.METHODS}
        self.planted = {m: Gathered() for m in self.METHODS}

    def add(self, chunk: dict[str, np.ndarray], logits: np.ndarray, first_user: int,
            cues: dict[str, np.ndarray] | None = None) -> None:
        """``first_user``: the global number of the chunk's first shopper (it fixes their sampled negatives)."""
        histories = _histories(chunk)
        n_items = logits.shape[1]
        scorers: dict[str, Callable[[], np.ndarray]] = {
            "profile_model": lambda: np.array(logits, dtype=np.float32),
            "popularity": lambda: baselines.popularity_scores(self.pop, len(histories)),
            "item_cooccurrence": lambda: baselines.cooccurrence_scores(self.cooccurrence, self.pop, histories,
                                                                       first_item=FIRST_ITEM),
            "category_rule": lambda: baselines.category_rule_scores(
                self.item_category, self.pop,
                baselines.category_shares(histories, self.item_category, self.n_categories, FIRST_ITEM)),
            "repeat_buy": lambda: baselines.repeat_scores(self.pop, histories, FIRST_ITEM),
        }
        has_next = np.flatnonzero(chunk["next_item"] >= 0)
        targets = chunk["next_item"][has_next].astype(np.int64)
        negatives = unseen_negatives(n_items, targets, [histories[i] for i in has_next], first_user + has_next, 100,
                                     self.seed, FIRST_ITEM)
        baskets = chunk["next_basket"]
        bought = np.flatnonzero([b is not None and len(b) > 0 for b in baskets])
        for method, score in scorers.items():
            scores = score()
            scores[:, :FIRST_ITEM] = -np.inf  # padding and mask are never recommendations
            if len(has_next):
                self.full[method].put(ranks=full_ranks(scores[has_next], targets))
                self.sampled[method].put(ranks=ranks_among(scores[has_next], targets, negatives))
            if len(bought):
                self.basket[method].put(**basket_metrics(scores[bought], [baskets[i] for i in bought]))
            for phenomenon, planted in (cues or {}).items():
                rows = np.flatnonzero((planted >= 0) & (chunk["next_item"] >= 0))
                top = np.argpartition(-scores[rows], 10, axis=1)[:, :10]
                self.planted[method].put(**{phenomenon: (top == planted[rows][:, None]).any(axis=1).astype(np.float64)})
            del scores

    def into(self, results: Results) -> None:
        for method in self.METHODS:
            if len(self.full[method]):
                ranks = self.full[method]["ranks"]
                results.add(method, "next_item", ranking_report(ranks), FULL, len(ranks), {"ranks": ranks})
                sampled = self.sampled[method]["ranks"]
                results.add(method, "next_item", ranking_report(sampled), SAMPLED, len(sampled), {"ranks": sampled})
            if len(self.basket[method]):
                per_user = {name: self.basket[method][name] for name in self.basket[method].parts}
                results.add(method, "next_basket", {k: float(v.mean()) for k, v in per_user.items()}, BASKET,
                            len(next(iter(per_user.values()))), per_user)
            for phenomenon in self.planted[method].parts:
                hits = self.planted[method][phenomenon]
                if len(hits):
                    results.add(method, f"planted_{phenomenon}", {"top10_hit": float(hits.mean())}, PHENOMENA[phenomenon],
                                len(hits), {"values": hits})


def binary_results(results: Results, task: str, candidates: dict[str, tuple[np.ndarray, np.ndarray]],
                   validation_labels: np.ndarray, test_labels: np.ndarray) -> None:
    """``candidates``: method -> (validation scores, test scores)."""
    for method, (val_scores, test_scores) in candidates.items():
        cut = best_threshold(validation_labels, val_scores)
        report = binary_report(test_labels, test_scores, threshold=cut)
        results.add(method, task, report, BINARY, len(test_labels), {"labels": test_labels, "scores": test_scores})


def price_level_results(results: Results, test: Gathered) -> None:
    """How well each estimate ranks the shoppers by the price level of what they touch next (the
    price head's own task): the model's expected level, the paid-price rule and the item price level
    (1 = typical where a shopper has none), on the test users with a priced event in the window."""
    priced = np.isfinite(test["price_next"]) & (test["price_next"] > 0)
    if priced.sum() < 3:
        return
    actual = np.log(test["price_next"][priced])
    for method, column in (("profile_model", "price"), ("price_rule", "price_rule"), ("item_price_rule", "item_price_rule")):
        estimate = test[column][priced]
        results.add(method, "price_level_next_window", {"spearman": spearman(actual, estimate)}, PRICE_LEVEL,
                    int(priced.sum()), {"actual": actual, "estimate": estimate})


def _rule(chunk: dict[str, np.ndarray], name: str, fill: float = 0.0) -> np.ndarray:
    """A rule column of a chunk as float (``fill`` where the rule has no value)."""
    return np.nan_to_num(np.asarray(chunk[name], dtype=np.float64), nan=fill)


def _category_index(lists: np.ndarray, categories: dict[str, int], missing: int, width: int = 3) -> np.ndarray:
    """Category name lists (their first ``width``) as an (n, width) index matrix: -1 pads a shorter
    list, ``missing`` marks a name outside the model's categories."""
    out = np.full((len(lists), width), -1, dtype=np.int64)
    for row, names in enumerate(lists):
        for col, name in enumerate(list(names if names is not None else [])[:width]):
            out[row, col] = categories.get(str(name), missing)
    return out


def _gather_scores(into: Gathered, chunk: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> None:
    """What the purchase and churn tasks judge, per shopper: every method's score and the labels."""
    into.put(intent=_sigmoid(out["intent_logit"]), churn=_sigmoid(out["churn_logit"]),
             intent_rule=_rule(chunk, "purchase_intent_rule"), churn_rule=_rule(chunk, "churn_risk_rule"),
             rfm_rule=(_rule(chunk, "r_score") + _rule(chunk, "f_score")) / 10,
             purchase_next=chunk["purchase_next"], churn_next=chunk["churn_next"],
             price=np.asarray(out["price"], np.float64).reshape(-1), price_next=np.asarray(chunk["price_next"], np.float64),
             price_rule=np.log(_rule(chunk, "paid_vs_category_median_90d", 1.0)),
             item_price_rule=np.log(_rule(chunk, "item_price_level_90d", 1.0)))


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
    report says so). A model trained on a snapshot later than D, or on another vocabulary, is refused.

    Driver memory is bounded: the executors write the evaluation set to a scratch folder, and the
    driver reads it twice in chunks of :func:`chunk_rows` shoppers (``model.evaluation_memory_mb``
    of users x items scores): once to fit the baselines (popularity and co-occurrence: items-sized),
    once to score and judge. Per shopper it keeps a few scalars (ranks, per-user metrics, scores:
    about 0.3 KB), so 10^6 test users need about 300 MB beside one chunk."""
    registered = RegisteredModel.resolve(config, model_alias, model_version)
    vocabulary = registered.usable_vocabulary(store, as_of)
    snapshot = vocabulary.snapshot
    horizon = config.model.horizon_days
    time_holdout = is_time_holdout(snapshot, horizon, as_of)
    holdout = (f"time holdout: the model's training labels end at {snapshot + timedelta(days=horizon)}, on or before D; "
               "evaluated on every shopper outside the validation split (training saw no label of the test window; "
               "demographics, which never change, on the test split only)" if time_holdout else
               f"user holdout: the model's training users' labels [{snapshot}, {snapshot + timedelta(days=horizon)}) "
               "overlap the test window; evaluated on the test split only")
    max_len = int(registered.spec.get("max_len", config.model.max_len))
    truth = _has_truth(store)
    os.makedirs(config.training_dir, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="evaluation-", dir=config.training_dir)  # every node mounts it
    try:
        evaluation_frame(spark, store, config, as_of, vocabulary, max_len, truth).orderBy("user_id").write.mode(
            "overwrite").parquet(f"file://{folder}/set")
        results, counts = _judge(config, registered.uri, vocabulary, f"{folder}/set", time_holdout, truth, as_of, seed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not counts["test"] or not counts["validation"]:
        raise ValueError(f"snapshot {as_of} has {counts['test']} test and {counts['validation']} "
                         "validation users; evaluation needs both (more users, or a later snapshot)")

    model_uri, version = registered.uri, registered.version
    evaluated_at = datetime.now(UTC).replace(tzinfo=None)
    rows = [{**r, "as_of": as_of, "model_uri": model_uri, "model_version": version, "evaluated_at": evaluated_at}
            for r in results.rows]
    store.create(EVALUATION)
    frame = spark.createDataFrame([tuple(r[f] for f in EVALUATION.schema.fieldNames()) for r in rows], EVALUATION.schema)
    merged = store.merge(frame, EVALUATION)
    heads = headline(results, seed)
    text = markdown(results, heads, as_of, model_uri, holdout)
    report: dict[str, Any] = {"as_of": str(as_of), "model_uri": model_uri, "model_version": version, "holdout": holdout,
              "trained_on": str(snapshot), "test_users": counts["test"], "validation_users": counts["validation"],
              "chunk_rows": counts["chunk_rows"], "planted_truth": counts["truth"] > 0, "rows": len(rows),
              "table_version": store.version(EVALUATION), "merge": str(merged), "headline": heads, "results": results.rows,
              "markdown": text}
    report["mlflow_run_id"] = _log_run(config, as_of, model_uri, version, results, heads, text, holdout)
    return report


def _judge(config: Config, model_uri: str, vocabulary: Vocabulary, folder: str, time_holdout: bool, truth: bool,
           as_of: date, seed: int) -> tuple[Results, dict[str, int]]:
    """The two chunked passes over the materialised evaluation set (see :func:`evaluate_snapshot`)."""
    n_items = vocabulary.n_items
    rows = chunk_rows(n_items, config.model.evaluation_memory_mb)
    # Pass 1: the baselines, fitted on every shopper's pre-D history (all of it is known at D), and
    # the majority class of the train split's stated demographics.
    pop, cooccurrence = np.zeros(n_items), None
    stated = {"age_label": np.zeros(0, dtype=np.int64), "gender_label": np.zeros(0, dtype=np.int64)}
    for chunk in chunks(folder, rows, ("item_seq", "split", *stated)):
        histories = _histories(chunk)
        pop += baselines.popularity(histories, n_items, FIRST_ITEM)
        found = baselines.cooccurrence(histories, n_items, first_item=FIRST_ITEM)
        cooccurrence = found if cooccurrence is None else cooccurrence + found
        for label in stated:
            values = chunk[label][(chunk["split"] == "train") & (chunk[label] >= 0)].astype(np.int64)
            counts = np.bincount(values)
            grown = np.zeros(max(len(counts), len(stated[label])), dtype=np.int64)
            grown[:len(counts)] += counts
            grown[:len(stated[label])] += stated[label]
            stated[label] = grown
    majority = {label: int(c.argmax()) if c.sum() else 0 for label, c in stated.items()}

    model = load_model_once(config.mlflow_tracking_uri, model_uri)
    category_of = {name: i for i, name in enumerate(vocabulary.categories)}
    ranking = RankingEvidence(pop, cooccurrence, vocabulary.item_category, len(vocabulary.categories), seed)
    validation, test, demographics, planted = Gathered(), Gathered(), Gathered(), Gathered()
    evaluated_so_far = 0
    # Pass 2: score and judge, chunk by chunk.
    for chunk in chunks(folder, rows):
        split = chunk["split"]
        part = {k: v[split == "validation"] for k, v in chunk.items()}
        if len(part["split"]):
            _gather_scores(validation, part, predict(model, part))
        # Under a time holdout the train split's shoppers are as unseen in the test window as the test
        # split's (the model keeps no per-shopper weights): ten times the evidence, tighter intervals.
        part = {k: v[(split != "validation") if time_holdout else (split == "test")] for k, v in chunk.items()}
        if not len(part["split"]):
            continue
        out = predict(model, part)
        cues = ({**planted_cues(part, vocabulary.item_ids),
                 **{name: np.nan_to_num(part[f"{name}_item"].astype(np.float64), nan=-1).astype(np.int64)
                    for name in ("friend_influence", "search_return")}} if truth else None)
        ranking.add(part, out["next_item_logits"], evaluated_so_far, cues)
        evaluated_so_far += len(part["split"])
        _gather_scores(test, part, out)
        on_test = part["split"] == "test"  # a train shopper's demographics were training labels
        demographics.put(age_label=np.where(on_test, part["age_label"], -1), gender_label=np.where(on_test, part["gender_label"], -1),
                         age_predicted=out["age_logits"].argmax(axis=1), gender_predicted=out["gender_logits"].argmax(axis=1))
        if truth:
            known = np.asarray(part["truth_known"] == True)  # noqa: E712 -- null (no truth) is not True
            if known.any():
                top = np.argsort(-out["interest_logits"][known], axis=1)[:, :3]
                planted.put(true_top=_category_index(part["truth_top_interests"][known], category_of, -3),
                            model_top=top, rule_top=_category_index(part["rule_top_interests"][known], category_of, -2),
                            share_top=_category_index(part["share_top_interests"][known], category_of, -2),
                            touched=_category_index(part["touched_categories_90d"][known], category_of, -2,
                                                    len(category_of)),
                            drifted=part["truth_drifted"][known].astype(bool),
                            sensitivity=part["truth_price_sensitivity"][known].astype(np.float64),
                            model_price=-out["price"][known].astype(np.float64),
                            paid_rule=np.asarray(part["paid_vs_category_median_90d"][known], dtype=np.float64),
                            item_price_rule=_rule(part, "item_price_level_90d", 1.0)[known],
                            churned=part["truth_churned"][known].astype(bool),
                            model_churn=_sigmoid(out["churn_logit"][known]),
                            churn_rule=_rule(part, "churn_risk_rule")[known],
                            purchased=part["truth_purchase"][known].astype(bool),
                            model_intent=_sigmoid(out["intent_logit"][known]),
                            intent_rule=_rule(part, "purchase_intent_rule")[known],
                            on_cutoff=np.asarray(part["truth_cutoff"][known], dtype="datetime64[D]") == np.datetime64(as_of))

    results = Results()
    ranking.into(results)
    if len(test) and len(validation):
        binary_results(results, "purchase_next_window", {
            "profile_model": (validation["intent"], test["intent"]), "intent_rule": (validation["intent_rule"], test["intent_rule"]),
            "rfm_rule": (validation["rfm_rule"], test["rfm_rule"])}, validation["purchase_next"], test["purchase_next"])
        binary_results(results, "churn_next_window", {
            "profile_model": (validation["churn"], test["churn"]), "churn_rule": (validation["churn_rule"], test["churn_rule"])},
            validation["churn_next"], test["churn_next"])
        price_level_results(results, test)
    for task, label in (("age_band", "age_label"), ("gender", "gender_label")):
        known_labels = demographics[label]
        known = known_labels >= 0
        if not known.any():
            continue
        predicted = demographics[label.replace("label", "predicted")]
        results.add("profile_model", task, {"accuracy": float((predicted[known] == known_labels[known]).mean())},
                    "test users with a stated (not imputed) value", int(known.sum()))
        results.add("majority_class", task, {"accuracy": float((known_labels[known] == majority[label]).mean())},
                    "test users with a stated (not imputed) value; majority of train users", int(known.sum()))
    if len(planted):
        _truth_results(results, planted)
    return results, {"test": len(test), "validation": len(validation), "truth": len(planted), "chunk_rows": rows}


def _has_truth(store: DeltaStore) -> bool:
    """The simulator plants a truth; real sources leave the table empty (or absent)."""
    return store.exists(PLANTED_TRUTH) and store.read(PLANTED_TRUTH).limit(1).count() > 0


INTERESTS_AT_D = "; the planted top 3 as it stood at D (a later drift judged by the interests before it)"


def _truth_results(results: Results, planted: Gathered) -> None:
    """Planted-truth recovery on the simulator, for the test shoppers the truth table knows."""
    protocol = "test users vs the simulator's planted truth (restricted table, never used in training)"
    true_top = planted["true_top"]
    n = len(true_top)
    drifted = planted["drifted"]
    for method, predicted in (("profile_model", planted["model_top"]), ("category_rule", planted["rule_top"]),
                              ("category_share_rule", planted["share_top"])):
        per_user = top_k_recall(true_top, predicted, k=3)
        results.add(method, "truth_interests", {"top3_recall": float(per_user.mean())}, protocol + INTERESTS_AT_D, n,
                    {"values": per_user})
        if drifted.any():  # shoppers whose interests moved before D: recency matters here
            results.add(method, "truth_interests_drifted", {"top3_recall": float(per_user[drifted].mean())},
                        protocol + INTERESTS_AT_D + "; shoppers with a planted interest drift before D", int(drifted.sum()),
                        {"values": per_user[drifted]})
    # What the evidence allows: the share of the planted top 3 the shopper touched at all in the 90
    # days before D -- no top 3 drawn from a shopper's own categories can find more.
    touched = found_share(true_top, planted["touched"])
    results.add("touched_90d", "truth_interests", {"top3_recall": float(touched.mean())},
                protocol + INTERESTS_AT_D + "; bound: planted top 3 with any item event in the 90 days before D", n, {"values": touched})
    sensitivity, model_estimate = planted["sensitivity"], planted["model_price"]
    results.add("profile_model", "truth_price_sensitivity", {"spearman": spearman(sensitivity, model_estimate)},
                protocol + "; all test users", n)
    # The statistic the price head starts from (the need family's shrunk item price level; 1 where a
    # shopper has no priced item): the model has to add something to it.
    item_level = planted["item_price_rule"]
    results.add("item_price_rule", "truth_price_sensitivity", {"spearman": spearman(sensitivity, -item_level)},
                protocol + "; all test users", n)
    paid = planted["paid_rule"]
    has_rule = ~np.isnan(paid)
    if has_rule.sum() > 2:
        # Sensitive shoppers pay less than the category median: the estimate is minus the paid ratio.
        results.add("profile_model", "truth_price_sensitivity",
                    {"spearman": spearman(sensitivity[has_rule], model_estimate[has_rule])},
                    protocol + "; users with a purchase (where the rule exists)", int(has_rule.sum()))
        results.add("price_rule", "truth_price_sensitivity", {"spearman": spearman(sensitivity[has_rule], -paid[has_rule])},
                    protocol + "; users with a purchase (where the rule exists)", int(has_rule.sum()))
        results.add("item_price_rule", "truth_price_sensitivity",
                    {"spearman": spearman(sensitivity[has_rule], -item_level[has_rule])},
                    protocol + "; users with a purchase (where the rule exists)", int(has_rule.sum()))
    churned = planted["churned"]
    for method, scores in (("profile_model", planted["model_churn"]), ("churn_rule", planted["churn_rule"])):
        results.add(method, "truth_churned", {"auc": auc(churned, scores)}, protocol, n, {"labels": churned, "scores": scores})
    if planted["on_cutoff"].all():
        buys = planted["purchased"]
        results.add("profile_model", "truth_purchase", {"auc": auc(buys, planted["model_intent"])}, protocol, n)
        results.add("intent_rule", "truth_purchase", {"auc": auc(buys, planted["intent_rule"])}, protocol, n)


HEADLINES = (  # (task, metric, protocol, best traditional competitors)
    ("next_item", "ndcg@10", FULL, ("popularity", "item_cooccurrence", "category_rule", "repeat_buy")),
    ("next_item", "ndcg@10", SAMPLED, ("popularity", "item_cooccurrence", "category_rule", "repeat_buy")),
    ("next_basket", "recall@20", BASKET, ("popularity", "item_cooccurrence", "category_rule", "repeat_buy")),
    ("purchase_next_window", "auc", BINARY, ("intent_rule", "rfm_rule")),
    ("churn_next_window", "auc", BINARY, ("churn_rule",)),
    ("price_level_next_window", "spearman", PRICE_LEVEL, ("price_rule", "item_price_rule")),
    ("truth_interests", "top3_recall", None, ("category_rule", "category_share_rule")),
    ("truth_churned", "auc", None, ("churn_rule",)),
    ("truth_interests_drifted", "top3_recall", None, ("category_rule", "category_share_rule")),
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
