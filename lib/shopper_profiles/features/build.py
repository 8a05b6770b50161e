"""Build one snapshot of every feature table: read bronze, cut at the as-of date, compute the
families, check them all, then overwrite only that snapshot's partition of each table."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopper_profiles.config import Config
from shopper_profiles.features import edges_before, events_before
from shopper_profiles.features.basic import basic_features
from shopper_profiles.features.behaviour import behaviour_features
from shopper_profiles.features.need import need_features
from shopper_profiles.features.quality import check_table, feature_summary, raise_on_failures
from shopper_profiles.features.schemas import FEATURE_SNAPSHOTS, feature_specs, stats_spec
from shopper_profiles.features.sequences import behaviour_sequences
from shopper_profiles.features.social import social_features
from shopper_profiles.ingest.bronze import EVENTS, ITEMS, SOCIAL_EDGES, USERS
from shopper_profiles.storage import DeltaStore, TableSpec

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
        # Last and in one commit: from here readers see this snapshot, every table at once.
        record_snapshot(spark, store, as_of, versions)
    finally:
        for frame in persisted.values():
            frame.unpersist()
    logger.info("snapshot %s: %d users, versions %s", as_of, active_users, versions)
    return {"as_of": str(as_of), "active_users": active_users, "tables": versions, "inputs": lineage,
            "features": len(stats)}


def record_snapshot(spark: SparkSession, store: DeltaStore, as_of: date, versions: dict[str, int]) -> None:
    """Publish snapshot D: one manifest row per table with the version its data is in."""
    store.create(FEATURE_SNAPSHOTS)
    built_at = datetime.now(UTC).replace(tzinfo=None)
    rows = [(as_of, table, int(version), built_at) for table, version in sorted(versions.items())]
    store.merge(spark.createDataFrame(rows, FEATURE_SNAPSHOTS.schema), FEATURE_SNAPSHOTS)


def published_versions(store: DeltaStore, as_of: date) -> dict[str, int]:
    """Table -> the Delta version snapshot D's build published (empty: not built, or not finished)."""
    if not store.exists(FEATURE_SNAPSHOTS):
        return {}
    rows = store.read(FEATURE_SNAPSHOTS).where(F.col("snapshot_date") == F.lit(as_of)).collect()
    return {r["table_name"]: int(r["version"]) for r in rows}


def read_published(store: DeltaStore, specs: Iterable[TableSpec], as_of: date) -> list[DataFrame]:
    """Snapshot D's rows of each feature table as one consistent whole: each read at the version its
    build published in the manifest, so a build that died half-way -- or a rebuild of D still
    running -- is never seen half (readers keep the last complete snapshot)."""
    specs = list(specs)
    published = published_versions(store, as_of)
    missing = [spec.name for spec in specs if spec.name not in published]
    if missing:
        raise ValueError(f"no {', '.join(missing)} for {as_of}: that feature snapshot is missing or incomplete (its "
                         f"build did not finish); run jobs/build_features.py --as-of {as_of} first")
    return [store.read(spec, version=published[spec.name]).where(F.col("snapshot_date") == F.lit(as_of)) for spec in specs]


def snapshot_tables(store: DeltaStore, config: Config, as_of: date) -> dict[str, DataFrame]:
    """The five feature frames of snapshot D (basic, behaviour, need, social, sequences), published versions."""
    specs = feature_specs(config.features)
    return dict(zip(specs, read_published(store, [specs[n] for n in specs], as_of), strict=True))


def repin_snapshots(spark: SparkSession, store: DeltaStore, config: Config) -> int:
    """Point every published snapshot at its tables' current versions, after a job that rewrote
    them without changing what a snapshot holds for its readers (compaction) or that must reach
    every snapshot (erasure): old versions are then free to vacuum. Not while a feature build runs."""
    if not store.exists(FEATURE_SNAPSHOTS):
        return 0
    current = {spec.name: store.version(spec) for spec in feature_specs(config.features).values() if store.exists(spec)}
    rows = [(r["snapshot_date"], r["table_name"], int(current.get(r["table_name"], r["version"])), r["built_at"])
            for r in store.read(FEATURE_SNAPSHOTS).collect()]
    if rows:
        store.merge(spark.createDataFrame(rows, FEATURE_SNAPSHOTS.schema), FEATURE_SNAPSHOTS)
    return len(rows)


def build_features(spark: SparkSession, store: DeltaStore, config: Config, dates: Iterable[date]) -> list[dict[str, Any]]:
    return [build_snapshot(spark, store, config, as_of) for as_of in dates]
