"""Batch scoring: the registered profile model turns snapshot D's feature tables into one
``gold/profiles`` row per shopper active before D.

The model is loaded from the MLflow registry once per executor Python worker (``mapInPandas``
over Arrow batches; nothing loops over users on the driver). A full run replaces the partition
``as_of = D``; ``--incremental`` re-scores only shoppers with events since the previous profile
snapshot and carries the others forward, in the same single commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopper_profiles.config import Config
from shopper_profiles.features import events_between
from shopper_profiles.features.build import published_versions, read_published, snapshot_tables
from shopper_profiles.features.schemas import feature_specs
from shopper_profiles.ingest.bronze import AGE_BANDS, EVENTS, GENDERS
from shopper_profiles.model.dataset import FIRST_ITEM, model_inputs_frame
from shopper_profiles.model.network import price_ratio
from shopper_profiles.model.registry import RegisteredModel, load_model_once
from shopper_profiles.model.vocabulary import Vocabulary
from shopper_profiles.storage import DeltaStore, TableSpec

logger = logging.getLogger(__name__)

SCORED = T.StructType([
    T.StructField("category", T.StringType(), True), T.StructField("score", T.FloatType(), True)])
RECOMMENDED = T.StructType([
    T.StructField("item_id", T.StringType(), True), T.StructField("score", T.FloatType(), True)])

PROFILES = TableSpec(
    "profiles",
    T.StructType([
        T.StructField("user_id", T.StringType(), False),  # pseudonym, never a raw id
        T.StructField("as_of", T.DateType(), False),
        T.StructField("user_embedding", T.ArrayType(T.FloatType()), True),
        T.StructField("top_interest", T.StringType(), True),
        T.StructField("top_interests", T.ArrayType(SCORED), True),
        T.StructField("interest_scores", T.MapType(T.StringType(), T.FloatType()), True),
        T.StructField("purchase_intent", T.FloatType(), True),
        T.StructField("expected_price_ratio", T.FloatType(), True),
        T.StructField("price_sensitivity_band", T.StringType(), True),
        T.StructField("churn_risk", T.FloatType(), True),
        T.StructField("predicted_age_band", T.StringType(), True),
        T.StructField("predicted_gender", T.StringType(), True),
        T.StructField("recommended_items", T.ArrayType(RECOMMENDED), True),
        T.StructField("last_event_ts", T.TimestampType(), True),
        T.StructField("features_as_of", T.DateType(), True),
        T.StructField("model_name", T.StringType(), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("feature_versions", T.MapType(T.StringType(), T.LongType()), True),
        T.StructField("scored_at", T.TimestampType(), True),
    ]),
    partition_by=("as_of",),
    keys=("user_id", "as_of"),
    description="One profile per shopper active before as_of: embedding, interests, intent, price band, churn risk, "
                "(optional) demographics, recommendations, and the model and feature versions behind it. "
                "features_as_of < as_of marks a row carried forward by an incremental refresh.",
)

# What the scoring UDF emits (the job adds as_of, lineage and scored_at around it).
SCORE_COLUMNS = ("user_id", "user_embedding", "top_interest", "top_interests", "interest_scores", "purchase_intent", "expected_price_ratio",
                 "price_sensitivity_band", "churn_risk", "predicted_age_band", "predicted_gender", "recommended_items",
                 "last_event_ts")
SCORE_SCHEMA = T.StructType([PROFILES.schema[c] for c in SCORE_COLUMNS])

@dataclass(frozen=True)
class ProfileDecoder:
    """Model outputs (numpy) -> profile columns; shipped to executors with the scoring function."""

    item_ids: tuple[str | None, ...]
    categories: tuple[str, ...]
    top_interests: int
    top_items: int
    price_cuts: tuple[float, float]  # expected price ratios: below the first 'high', above the second 'low'
    demographics: bool

    def decode(self, out: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        interests = _sigmoid(out["interest_logits"])
        logits = out["next_item_logits"].astype(np.float64)
        logits[:, :FIRST_ITEM] = -np.inf  # padding and mask are never recommendations
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        k = min(self.top_items, probabilities.shape[1] - FIRST_ITEM)
        best = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
        ratio = price_ratio(out)
        low, high = self.price_cuts
        rows = len(ratio)
        columns: dict[str, list[Any]] = {
            "user_embedding": [v.astype(np.float32) for v in out["user_embedding"]],
            "top_interest": [], "top_interests": [], "interest_scores": [], "recommended_items": [],
            "purchase_intent": _sigmoid(out["intent_logit"]).astype(np.float32).tolist(),
            "expected_price_ratio": ratio.astype(np.float32).tolist(),
            "price_sensitivity_band": np.where(ratio < low, "high", np.where(ratio > high, "low", "medium")).tolist(),
            "churn_risk": _sigmoid(out["churn_logit"]).astype(np.float32).tolist(),
            "predicted_age_band": [AGE_BANDS[i] for i in out["age_logits"].argmax(axis=1)] if self.demographics else [None] * rows,
            "predicted_gender": [GENDERS[i] for i in out["gender_logits"].argmax(axis=1)] if self.demographics else [None] * rows,
        }
        for row in range(rows):
            order = np.argsort(-interests[row], kind="stable")[: self.top_interests]
            columns["top_interest"].append(self.categories[order[0]])
            columns["top_interests"].append([{"category": self.categories[c], "score": float(interests[row, c])} for c in order])
            columns["interest_scores"].append({name: float(interests[row, c]) for c, name in enumerate(self.categories)})
            items = best[row][np.argsort(-probabilities[row, best[row]], kind="stable")]
            columns["recommended_items"].append([{"item_id": self.item_ids[i], "score": float(probabilities[row, i])}
                                                 for i in items])
        return columns


LEGACY_PRICE_CUTS = (0.9, 1.1)  # models registered before the cuts travelled with them: fixed ratios


def price_cuts(spec: dict[str, Any]) -> tuple[float, float]:
    """The expected price ratios that bound a model's price-sensitivity bands: measured on its training
    shoppers (an expectation shrinks towards 1 as it should, so fixed ratio cuts would empty the outer
    bands), or the fixed legacy ratios for a model that carries none."""
    cuts = spec.get("price_cuts")
    return (float(cuts[0]), float(cuts[1])) if cuts else LEGACY_PRICE_CUTS


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def score_function(tracking_uri: str, model_uri: str, decoder: ProfileDecoder,
                   batch_rows: int = 512) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` body: model inputs in, profile columns out, batch by batch."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from shopper_profiles.model.network import predict

        model = load_model_once(tracking_uri, model_uri)
        for batch in batches:
            if batch.empty:
                continue
            arrays = {k: np.stack(batch[k].to_numpy()) for k in ("item_seq", "type_seq", "time_seq", "tabular")}
            columns = decoder.decode(predict(model, arrays, batch=batch_rows))
            yield pd.DataFrame({"user_id": batch["user_id"].to_numpy(), **columns,
                                "last_event_ts": batch["last_event_ts"].to_numpy()})[list(SCORE_COLUMNS)]

    return score


def scoring_inputs(spark: SparkSession, store: DeltaStore, config: Config, vocabulary: Vocabulary, as_of: date,
                   max_len: int, users: DataFrame | None = None) -> tuple[DataFrame, dict[str, int]]:
    """Model inputs for snapshot D (optionally only ``users``), tokenised with the model's own
    vocabulary, and the Delta version of every feature table read."""
    snapshot = snapshot_tables(store, config, as_of)  # every table as its build published it
    versions = published_versions(store, as_of)
    if users is not None:
        snapshot = {name: frame.join(users, "user_id") for name, frame in snapshot.items()}
    inputs = model_inputs_frame(snapshot["sequences"], snapshot["basic"], snapshot["behaviour"], snapshot["need"],
                                snapshot["social"], vocabulary.frame(spark), as_of, max_len, vocabulary.categories)
    last_event = snapshot["sequences"].select("user_id", F.element_at("event_ts", -1).alias("last_event_ts"))
    return inputs.join(last_event, "user_id"), versions


def usable_model(store: DeltaStore, config: Config, as_of: date, alias: str | None, version: str | None) -> tuple[
        RegisteredModel, Vocabulary]:
    """The registered model and its vocabulary, refused (with what to do) when it cannot serve D."""
    model = RegisteredModel.resolve(config, alias, version)
    return model, model.usable_vocabulary(store, as_of)


def profiles_at(store: DeltaStore, as_of: date) -> DataFrame:
    """Profile snapshot D, or an error saying how to make it (for the jobs built on profiles)."""
    frame = store.read(PROFILES).where(F.col("as_of") == F.lit(as_of)) if store.exists(PROFILES) else None
    if frame is None or frame.limit(1).count() == 0:
        raise ValueError(f"no profiles for {as_of}; run jobs/score_profiles.py --as-of {as_of} first")
    return frame


def previous_snapshot(store: DeltaStore, as_of: date) -> date | None:
    """The latest profile snapshot before D, if any."""
    if not store.exists(PROFILES):
        return None
    found = store.read(PROFILES).where(F.col("as_of") < F.lit(as_of)).agg(F.max("as_of")).collect()[0][0]
    return found


def changed_users(events: DataFrame, population: DataFrame, previous: DataFrame, since: date, as_of: date) -> DataFrame:
    """Pure: shoppers of snapshot D with an event in [since, D), plus any the previous snapshot
    does not hold (their first profile)."""
    active = events_between(events, since, as_of).select("user_id").distinct()
    new = population.join(previous.select("user_id"), "user_id", "left_anti")
    return population.join(active, "user_id").unionByName(new).distinct()


def score_profiles(spark: SparkSession, store: DeltaStore, config: Config, as_of: date, alias: str | None = None,
                   version: str | None = None, incremental: bool = False) -> dict[str, Any]:
    """Score snapshot D into ``gold/profiles`` (one commit replacing partition D); the report back."""
    started = time.perf_counter()
    model, vocabulary = usable_model(store, config, as_of, alias, version)
    p = config.profiles
    max_len = int(model.spec.get("max_len", config.model.max_len))
    decoder = ProfileDecoder(vocabulary.item_ids, vocabulary.categories, p.top_interests, p.top_items,
                             price_cuts(model.spec), p.demographics)
    (sequences,) = read_published(store, [feature_specs(config.features)["sequences"]], as_of)
    population = sequences.select("user_id")
    store.create(PROFILES)

    mode, since, carried, users = "full", None, None, None
    if incremental:
        since = previous_snapshot(store, as_of)
        previous = store.read(PROFILES).where(F.col("as_of") == F.lit(since)) if since else None
        versions_before = ({r[0] for r in previous.select("model_version").distinct().collect()}
                           if previous is not None else set())
        if since is None:
            logger.info("incremental refresh of %s: no earlier profile snapshot, scoring everyone", as_of)
        elif versions_before != {model.version}:
            logger.info("incremental refresh of %s: the %s profiles came from model version(s) %s, not %s; "
                        "scoring everyone", as_of, since, sorted(versions_before), model.version)
        else:
            assert previous is not None
            mode = "incremental"
            users = changed_users(store.read(EVENTS), population, previous, since, as_of).cache()
            carried = previous.join(users, "user_id", "left_anti").join(population, "user_id").withColumn(
                "as_of", F.lit(as_of))

    inputs, feature_versions = scoring_inputs(spark, store, config, vocabulary, as_of, max_len, users)
    scored = inputs.mapInPandas(score_function(config.mlflow_tracking_uri, model.uri, decoder), SCORE_SCHEMA)  # type: ignore[arg-type]
    lineage = F.create_map(*[x for name, v in sorted(feature_versions.items()) for x in (F.lit(name), F.lit(v).cast("long"))])
    scored = scored.select(
        *[F.col(c) for c in SCORE_COLUMNS], F.lit(as_of).alias("as_of"), F.lit(as_of).alias("features_as_of"),
        F.lit(model.name).alias("model_name"), F.lit(model.version).alias("model_version"),
        lineage.alias("feature_versions"), F.lit(datetime.now(UTC).replace(tzinfo=None)).alias("scored_at"))
    rows = scored.select(*PROFILES.schema.fieldNames())
    if carried is not None:
        rows = rows.unionByName(carried.select(*PROFILES.schema.fieldNames()))
    table_version = store.overwrite(rows, PROFILES, window={"as_of": as_of})
    written = store.read(PROFILES).where(F.col("as_of") == F.lit(as_of))
    counts = written.agg(F.count("*").alias("rows"), F.sum((F.col("features_as_of") == F.lit(as_of)).cast("long")).alias(
        "rescored")).collect()[0]
    total, rescored = int(counts["rows"]), int(counts["rescored"] or 0)
    if users is not None:
        users.unpersist()
    seconds = time.perf_counter() - started
    report = {"as_of": str(as_of), "mode": mode, "previous": str(since) if since else None, "model_uri": model.uri,
              "model_version": model.version, "profiles": total, "rescored": rescored,
              "rescored_share": round(rescored / total, 4) if total else 0.0, "table_version": table_version,
              "feature_versions": feature_versions, "seconds": round(seconds, 1),
              "users_per_second": round(rescored / seconds, 1) if seconds else None}
    logger.info("profiles %s (%s): %d rows, %d re-scored, version %d, %.1fs", as_of, mode, total, rescored, table_version,
                seconds)
    return report
