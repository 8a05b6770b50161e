"""Source adapters: each lands one data set as a :class:`RawBatch` in the canonical raw schema."""

from __future__ import annotations

import os
from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from shopper_profiles.config import Config
from shopper_profiles.ingest.load import make_load_id
from shopper_profiles.ingest.simulator import RawBatch, simulate, simulate_events
from shopper_profiles.ingest.sources import amazon_beauty, online_retail
from shopper_profiles.storage import DeltaStore

SOURCES = ("simulator", "online_retail", "amazon_beauty")
DEFAULT_FILES = {"online_retail": "online_retail.csv.gz", "amazon_beauty": "amazon_beauty.txt"}


def _fingerprint(path: str) -> str:
    stat = os.stat(path)
    return f"{os.path.basename(path)}:{stat.st_size}"


def land_frame(spark: SparkSession, frame: DataFrame, path: str) -> DataFrame:
    """Write a frame to the landing zone as Parquet and read it back: later steps scan the file,
    not the plan that made it."""
    frame.write.mode("overwrite").parquet(path)
    return spark.read.parquet(path)


def land_batch(spark: SparkSession, batch: RawBatch, landing: str) -> RawBatch:
    """Write a generated batch to the landing zone as Parquet and read it back: what ingestion
    validates is then a plain file scan (as with any real feed), not the generator's plan.
    Holds raw ids: the landing zone is covered by erasure like bronze."""
    frames = {name: getattr(batch, name) for name in ("events", "users", "items", "social_edges", "truth", "injected")}
    landed: dict[str, DataFrame | None] = {}
    for name, frame in frames.items():
        landed[name] = None if frame is None else land_frame(spark, frame, f"{landing}/{name}")
    events = landed.pop("events")
    assert events is not None
    return RawBatch(source=batch.source, events=events, **landed)


def land_source(
    spark: SparkSession, config: Config, source: str, start: date | None = None, end: date | None = None,
    path: str | None = None,
) -> tuple[RawBatch, tuple[date, date] | None, str]:
    """The landed batch, its load window and its deterministic load id."""
    if source == "simulator":
        sim = config.simulator
        window = (start or sim.start_date, end or sim.start_date + timedelta(days=sim.days))
        load_id = make_load_id(source, window)
        landing = f"{config.lakehouse_root}/landing/{source}/{load_id}"
        # The clean generated events once, on disk: the landed events (with dirt and duplicates)
        # and the planted-kind list are three reads of them, each a full regeneration otherwise.
        typed = land_frame(spark, simulate_events(spark, sim, *window), f"{landing}/generated_events")
        return land_batch(spark, simulate(spark, sim, *window, typed=typed), landing), window, load_id
    if source not in DEFAULT_FILES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if start or end:
        raise ValueError(f"--from/--to apply to the simulator only; {source} is loaded whole (reruns are idempotent)")
    path = path or os.path.join(config.data_dir, DEFAULT_FILES[source])
    if not os.path.exists(path):
        raise ValueError(f"{source}: input file {path} not found; set data.dir or pass --path")
    batch = online_retail.land(spark, path) if source == "online_retail" else amazon_beauty.land(spark, path)
    return batch, None, make_load_id(source, None, _fingerprint(path))


def ingest_source(spark: SparkSession, store: DeltaStore, config: Config, source: str, start: date | None = None,
                  end: date | None = None, path: str | None = None) -> dict[str, Any]:
    """Land a source and ingest it into bronze (validate, quarantine, pseudonymise, reconcile);
    the reconciliation report back."""
    from shopper_profiles.ingest.load import Ingestion, reconciliation_report
    from shopper_profiles.ingest.pseudonym import load_key

    load_key(spark, config)  # no key, no load: say so before landing anything
    batch, window, load_id = land_source(spark, config, source, start, end, path)
    ingestion = Ingestion(spark, store, config, batch, window, load_id)
    report = reconciliation_report(ingestion.run(), load_id, ingestion.refused)
    if ingestion.refused_raw_ids:
        from shopper_profiles.erasure import scrub_landing

        # The simulator landed erased shoppers again: our copy of the feed drops them too.
        report["landing_rows_scrubbed"] = scrub_landing(spark, config, source, ingestion.refused_raw_ids)
    return report
