"""Build the vocabulary of snapshot D and the training set of D from the Delta feature tables."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopper_profiles.config import Config
from shopper_profiles.features import events_before
from shopper_profiles.features.build import snapshot_tables
from shopper_profiles.features.schemas import feature_specs
from shopper_profiles.ingest.bronze import EVENTS, ITEMS
from shopper_profiles.model.dataset import FIRST_ITEM, VOCAB, item_vocab, training_examples, training_spec
from shopper_profiles.model.vocabulary import Vocabulary
from shopper_profiles.storage import DeltaStore

logger = logging.getLogger(__name__)


TRAINING_FILES = 8
"""Files per training snapshot: Petastorm shards row groups across ranks, so a snapshot needs at
least as many as there are ranks."""


def label_window_observed(last_event: datetime | None, as_of: date, horizon_days: int) -> bool:
    """Bronze has seen [D, D + horizon) once its events reach the window's last day."""
    return last_event is not None and last_event.date() >= as_of + timedelta(days=horizon_days - 1)


def is_time_holdout(training_snapshot: date, horizon_days: int, as_of: date) -> bool:
    """Whether a model trained on ``training_snapshot`` saw no label of [D, D + horizon): its
    labels end by D, so every shopper outside the validation split (which chose its epoch and
    refit) is held out; otherwise only the test split is."""
    return training_snapshot + timedelta(days=horizon_days) <= as_of


def require_observed_labels(store: DeltaStore, config: Config, as_of: date) -> None:
    """Labels come from [D, D + horizon): a window bronze has not fully seen would label every
    shopper churned and no one a buyer, so such a D is refused with the latest usable one."""
    last = store.read(EVENTS).agg(F.max("ts")).collect()[0][0]
    if not label_window_observed(last, as_of, config.model.horizon_days):
        horizon_end = as_of + timedelta(days=config.model.horizon_days)
        latest = (last.date() - timedelta(days=config.model.horizon_days - 1)) if last else None
        raise ValueError(f"bronze events end at {last}, before the label window [{as_of}, {horizon_end}) is complete; "
                         f"use --as-of {latest} or earlier (model.horizon_days={config.model.horizon_days})")


def snapshot_examples(spark: SparkSession, store: DeltaStore, config: Config, as_of: date, vocabulary: Vocabulary,
                      max_len: int | None = None) -> DataFrame:
    """Snapshot D's features + the labels of [D, D + horizon), tokenised with ``vocabulary``: the
    training set of D, or the evaluation set at D of a model trained on an earlier snapshot."""
    require_observed_labels(store, config, as_of)
    snapshot = snapshot_tables(store, config, as_of)  # every table as its build published it
    events = store.read(EVENTS)
    return training_examples(snapshot["sequences"], snapshot["basic"], snapshot["behaviour"], snapshot["need"],
                             snapshot["social"], events, vocabulary.frame(spark), as_of, config.model.horizon_days,
                             max_len or config.model.max_len, list(vocabulary.categories))


def example_dates(config: Config, as_of: date) -> list[date]:
    """The feature snapshots whose shoppers give training examples for snapshot T = ``as_of``:
    T, T - every, ... (``model.training_snapshots`` of them), newest first."""
    every = timedelta(days=config.model.snapshot_every_days)
    return [as_of - i * every for i in range(config.model.training_snapshots)]


def build_training_set(spark: SparkSession, store: DeltaStore, config: Config, as_of: date) -> dict[str, Any]:
    """The vocabulary of T = ``as_of`` (items in the catalogue or seen before T) and the training set
    of T: one example per shopper and snapshot S in ``example_dates`` (features as of S, labels from
    [S, S + horizon), all ending by T + horizon), every one tokenised with T's vocabulary. A shopper
    keeps one split in every snapshot (the split is a hash of the user id)."""
    require_observed_labels(store, config, as_of)  # before anything is written
    specs = feature_specs(config.features)
    store.create(VOCAB)
    events_cut = events_before(store.read(EVENTS), as_of)
    store.overwrite(item_vocab(store.read(ITEMS), events_cut, as_of), VOCAB, window={"snapshot_date": as_of})
    vocabulary = Vocabulary.load(store, as_of)
    spec = training_spec(config.model.max_len)
    store.create(spec)
    examples = snapshot_examples(spark, store, config, as_of, vocabulary)
    for day in example_dates(config, as_of)[1:]:
        examples = examples.unionByName(
            snapshot_examples(spark, store, config, day, vocabulary).withColumn("snapshot_date", F.lit(as_of)))
    # Several files, so Petastorm can hand each rank its own row groups.
    version = store.overwrite(examples, spec, window={"snapshot_date": as_of}, target_files=TRAINING_FILES)
    counts: dict[str, int] = dict(store.read(spec).where(F.col("snapshot_date") == F.lit(as_of)).groupBy("split").count().collect())
    lineage = {s.name: store.version(s) for s in (*specs.values(), EVENTS, ITEMS)}
    return {"as_of": str(as_of), "version": version, "splits": counts, "items": vocabulary.n_items - FIRST_ITEM,
            "example_dates": [str(d) for d in example_dates(config, as_of)],
            "categories": len(vocabulary.categories), "vocab_fingerprint": vocabulary.fingerprint, "inputs": lineage}
