"""Build one snapshot of every feature table: read bronze, cut at the as-of date, compute the
families, check them all, then overwrite only that snapshot's partition of each table."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from shopper_profiles.config import Config
from shopper_profiles.features import edges_before, events_before
from shopper_profiles.features.basic import basic_features
from shopper_profiles.features.behaviour import behaviour_features
from shopper_profiles.features.need import need_features
from shopper_profiles.features.quality import check_table, feature_summary, raise_on_failures
from shopper_profiles.features.schemas import feature_specs, stats_spec
from shopper_profiles.features.sequences import behaviour_sequences
from shopper_profiles.features.social import social_features
from shopper_profiles.ingest.bronze import EVENTS, ITEMS, SOCIAL_EDGES, USERS
from shopper_profiles.storage import DeltaStore

logger = logging.getLogger(__name__)


def compute_families(events: DataFrame, users: DataFrame, items: DataFrame, edges: DataFrame, as_of: date,
                     config: Config) -> dict[str, DataFrame]:
    """Pure: bronze frames in, the five snapshot frames out (nothing read or written)."""
    cfg = config.features
    cut = events_before(events, as_of)
    return {
        "basic": basic_features(users, cut, as_of),
        "behaviour": behaviour_features(cut, items, as_of, cfg.windows_days, cfg.top_terms, cfg.top_brands),
        "need": need_features(cut, items, as_of, cfg.affinity_half_life_days, cfg.inactive_days),
        "social": social_features(cut, edges_before(edges, as_of), as_of),
        "sequences": behaviour_sequences(cut, as_of, cfg.sequence_length),
    }


def dates_between(start: date, end: date) -> list[date]:
    """Inclusive range of snapshot dates."""
    if end < start:
        raise ValueError(f"--backfill {start} {end}: the end is before the start")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def build_snapshot(spark: SparkSession, store: DeltaStore, config: Config, as_of: date) -> dict[str, Any]:
    specs = feature_specs(config.features)
    for spec in [*specs.values(), stats_spec()]:
        store.create(spec)
    inputs = {spec.name: store.read(spec) for spec in (EVENTS, USERS, ITEMS, SOCIAL_EDGES)}
    lineage = {spec.name: store.version(spec) for spec in (EVENTS, USERS, ITEMS, SOCIAL_EDGES)}
    events = inputs["events"]
    frames = compute_families(events, inputs["users"], inputs["items"], inputs["social_edges"], as_of, config)
    persisted = {name: frame.persist(StorageLevel.MEMORY_AND_DISK) for name, frame in frames.items()}
    try:
        active_users = events_before(events, as_of).select("user_id").distinct().count()
        if active_users == 0:
            raise ValueError(f"snapshot {as_of}: no events before this date in bronze; ingest first or pick a later --as-of")
        checks = [check_table(persisted[name], specs[name], active_users, config.features.sequence_length)
                  for name in specs]
        raise_on_failures(checks, as_of)
        versions = {}
        stats: list[tuple] = []
        for name, spec in specs.items():
            # evolve: columns added by a later release (e.g. event_ids) reach tables an earlier one created
            versions[spec.name] = store.overwrite(persisted[name], spec, window={"snapshot_date": as_of}, evolve=True)
            stats += feature_summary(persisted[name], spec, as_of)
        stats_frame = spark.createDataFrame(stats, stats_spec().schema)
        store.overwrite(stats_frame, stats_spec(),
                        window={"table_name": [s.name for s in specs.values()], "snapshot_date": as_of})
    finally:
        for frame in persisted.values():
            frame.unpersist()
    logger.info("snapshot %s: %d users, versions %s", as_of, active_users, versions)
    return {"as_of": str(as_of), "active_users": active_users, "tables": versions, "inputs": lineage,
            "features": len(stats)}


def build_features(spark: SparkSession, store: DeltaStore, config: Config, dates: Iterable[date]) -> list[dict[str, Any]]:
    return [build_snapshot(spark, store, config, as_of) for as_of in dates]
