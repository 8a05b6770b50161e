"""Validated bronze ingestion: landed rows -> quarantine | duplicates | bronze, reconciled.

For every entity of a load: input = accepted + quarantined + duplicates dropped, or the load
fails loudly -- checked on the staged (persisted) frames before the first commit, so a load
that would lose a row changes no table. A load is identified by (source, window), so loading the same window again
finds every event already present and changes nothing; the next window appends only its own
events. Raw user ids are replaced by pseudonyms before any bronze write.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopper_profiles.config import Config
from shopper_profiles.ingest import validation
from shopper_profiles.ingest.bronze import (
    ERASURES,
    EVENTS,
    INGEST_LOADS,
    INGEST_TABLES,
    ITEMS,
    PLANTED_TRUTH,
    QUARANTINE,
    SOCIAL_EDGES,
    USER_ID_MAP,
    USERS,
)
from shopper_profiles.ingest.pseudonym import erasure_token_column, id_map, load_key
from shopper_profiles.ingest.simulator import RawBatch
from shopper_profiles.storage import DeltaStore, TableSpec

logger = logging.getLogger(__name__)


ERASED_RULE = "erased_user"
WITHHELD = "raw row withheld: the shopper was erased on request"
RAW_ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("raw_user_id",), "users": ("raw_user_id",), "social_edges": ("raw_src_user_id", "raw_dst_user_id"),
}
"""Per validated entity, the columns that hold a raw shopper id."""


class ReconciliationError(RuntimeError):
    """Counts of a load do not balance: some rows would have been lost."""


@dataclass(frozen=True)
class EntityLoad:
    entity: str
    input_rows: int
    accepted_rows: int
    quarantined_rows: int
    duplicate_rows: int
    already_loaded_rows: int
    new_rows: int

    def balances(self) -> bool:
        return self.input_rows == self.accepted_rows + self.quarantined_rows + self.duplicate_rows


def assert_reconciled(loads: list[EntityLoad], load_id: str) -> None:
    """Fail loudly when any entity's counts do not balance: a row went missing somewhere."""
    bad = [load for load in loads if not load.balances()]
    if bad:
        raise ReconciliationError(
            f"load {load_id} does not reconcile (input != accepted + quarantined + duplicates): "
            f"{[asdict(b) for b in bad]}; nothing downstream should read this load until it is explained"
        )


def make_load_id(source: str, window: tuple[date, date] | None, fingerprint: str = "") -> str:
    """Deterministic per (source, window[, input fingerprint]): reruns overwrite their own quarantine."""
    if window is not None:
        return f"{source}-{window[0]:%Y%m%d}-{window[1]:%Y%m%d}"
    return f"{source}-full-{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}"


def ensure_bronze(store: DeltaStore) -> None:
    for spec in INGEST_TABLES:
        store.create(spec)


def _quarantine_rows(flagged: DataFrame, entity: str, load_id: str, source: str, load_time: datetime) -> DataFrame:
    return flagged.where(F.col("_rule").isNotNull()).select(
        F.lit(load_id).alias("load_id"), F.lit(entity).alias("entity"), F.col("_rule").alias("rule"),
        F.col("_detail").alias("detail"), F.col("raw_row"), F.lit(source).alias("source"),
        F.lit(load_time).cast("timestamp").alias("quarantined_at"),
    )


def _mark_erased(frame: DataFrame, columns: tuple[str, ...], erased: DataFrame) -> DataFrame:
    """``frame`` plus a boolean ``_erased``: does any of ``columns`` hold an erased raw id."""
    flags = []
    for i, column in enumerate(columns):
        flag = f"_erased_{i}"
        frame = frame.join(F.broadcast(erased.select(F.col("raw_user_id").alias(column), F.lit(True).alias(flag))),
                           column, "left")
        flags.append(F.col(flag))
    return frame.withColumn("_erased", F.coalesce(*flags, F.lit(False))).drop(*[f"_erased_{i}" for i in range(len(columns))])


def _conform(frame: DataFrame, spec: TableSpec) -> DataFrame:
    return frame.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in spec.schema.fields])


class Ingestion:
    """One load of one source batch into bronze."""

    def __init__(self, spark: SparkSession, store: DeltaStore, config: Config, batch: RawBatch,
                 window: tuple[date, date] | None, load_id: str, load_time: datetime | None = None):
        self.spark, self.store, self.config, self.batch = spark, store, config, batch
        self.window, self.load_id = window, load_id
        self.load_time = load_time or datetime.now(UTC).replace(tzinfo=None)
        self.source = batch.source
        self.cfg = config.ingest
        self._persisted: list[DataFrame] = []
        self.refused: dict[str, int] = {}  # rows of erased shoppers, per entity
        self.refused_raw_ids: list[str] = []  # (driver only) whose landed rows the caller may scrub

    def _persist(self, frame: DataFrame) -> DataFrame:
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        self._persisted.append(frame)
        return frame

    def run(self) -> list[EntityLoad]:
        # Schema drift of any entity stops the load before anything is written.
        for entity, frame in self.batch.entities().items():
            validation.check_columns(frame, entity)
        ensure_bronze(self.store)
        try:
            return self._run()
        finally:
            for frame in self._persisted:
                frame.unpersist()

    def _run(self) -> list[EntityLoad]:
        lt = self.load_time
        flagged: dict[str, DataFrame] = {}
        if self.batch.users is not None:
            flagged["users"] = validation.validate_users(self.batch.users, self.cfg, lt)
        if self.batch.items is not None:
            flagged["items"] = validation.validate_items(self.batch.items, self.cfg)
        if self.batch.social_edges is not None:
            flagged["social_edges"] = validation.validate_social_edges(self.batch.social_edges, self.cfg, lt)
        flagged = {k: self._persist(v) for k, v in flagged.items()}
        # The events are judged in one pass (rules, then copies) whose result is cached once:
        # every count, the quarantine and the bronze append below read that cache.
        flagged["events"] = validation.mark_duplicates(
            validation.validate_events(self.batch.events, self.cfg, lt, self.window), self.cfg.near_duplicate_seconds,
            self._persist)
        events = flagged["events"]
        survivors = {"events": events.where(~F.col("_duplicate") & F.col("_rule").isNull())}
        rejected = {"events": events.where(F.col("_rule").isNotNull()).drop("_duplicate")}
        duplicates = {"events": events.where(F.col("_duplicate"))}
        for entity, keys in (("users", ["raw_user_id"]), ("items", ["item_id"]),
                             ("social_edges", ["raw_src_user_id", "raw_dst_user_id", "edge_type"])):
            if entity not in flagged:
                continue
            valid = flagged[entity].where(F.col("_rule").isNull())
            # Several rows for one key in a load: keep one deterministically, count the rest.
            ranked = valid.withColumn("_n", F.row_number().over(Window.partitionBy(*keys).orderBy(F.col("raw_row").desc())))
            survivors[entity] = ranked.where("_n = 1").drop("_n")
            duplicates[entity] = ranked.where("_n > 1")
            rejected[entity] = flagged[entity].where(F.col("_rule").isNotNull())

        key = load_key(self.spark, self.config)
        truth = self.batch.truth
        erased = self._erased_raw_ids(flagged, key)
        if erased is not None:
            self._refuse_erased(erased, survivors, rejected)
            truth = truth.join(F.broadcast(erased), "raw_user_id", "left_anti") if truth is not None else None

        # Pseudonymise: one HMAC per distinct raw id, then joins.
        raw_ids = survivors["events"].select("raw_user_id")
        if "users" in survivors:
            raw_ids = raw_ids.unionByName(survivors["users"].select("raw_user_id"))
        if "social_edges" in survivors:
            edges = survivors["social_edges"]
            raw_ids = raw_ids.unionByName(edges.select(F.col("raw_src_user_id").alias("raw_user_id"))).unionByName(
                edges.select(F.col("raw_dst_user_id").alias("raw_user_id")))
        if truth is not None:
            raw_ids = raw_ids.unionByName(truth.select("raw_user_id"))
        ids = self._persist(id_map(raw_ids, self.source, key))
        to_pseudonym = F.broadcast(ids.select("raw_user_id", "user_id"))

        quarantine: DataFrame | None = None
        for entity in flagged:
            rows = _quarantine_rows(rejected[entity], entity, self.load_id, self.source, lt)
            quarantine = rows if quarantine is None else quarantine.unionByName(rows)
        assert quarantine is not None
        quarantine = self._persist(quarantine)
        quarantined: dict[str, int] = {}
        for entity, rule, count in quarantine.groupBy("entity", "rule").count().collect():
            quarantined[entity] = quarantined.get(entity, 0) + count
            if rule == ERASED_RULE:
                self.refused[entity] = count

        staged = [self._stage_events(survivors["events"], to_pseudonym, flagged["events"], duplicates["events"],
                                     int(quarantined.get("events", 0)))]
        if "users" in survivors:
            users = survivors["users"].join(to_pseudonym, "raw_user_id").withColumn("source", F.lit(self.source))
            staged.append(self._stage_merge("users", USERS, users, flagged, duplicates, quarantined))
        if "items" in survivors:
            items = survivors["items"].withColumn("source", F.lit(self.source))
            staged.append(self._stage_merge("items", ITEMS, items, flagged, duplicates, quarantined))
        if "social_edges" in survivors:
            src = ids.select(F.col("raw_user_id").alias("raw_src_user_id"), F.col("user_id").alias("src_user_id"))
            dst = ids.select(F.col("raw_user_id").alias("raw_dst_user_id"), F.col("user_id").alias("dst_user_id"))
            edges = (survivors["social_edges"].join(F.broadcast(src), "raw_src_user_id")
                     .join(F.broadcast(dst), "raw_dst_user_id").withColumn("source", F.lit(self.source)))
            staged.append(self._stage_merge("social_edges", SOCIAL_EDGES, edges, flagged, duplicates, quarantined))

        # Reconcile before anything is visible: a load that would lose a row commits nothing.
        assert_reconciled([load for load, _ in staged], self.load_id)
        self.store.overwrite(quarantine, QUARANTINE, window={"load_id": self.load_id})
        loads = [commit() for _, commit in staged]
        if truth is not None:
            self.store.overwrite(_conform(truth.join(to_pseudonym, "raw_user_id"), PLANTED_TRUTH), PLANTED_TRUTH)
        self._record_id_map(ids)
        self._record(loads)
        return loads

    def _erased_raw_ids(self, flagged: dict[str, DataFrame], key: bytes) -> DataFrame | None:
        """Raw ids in this load whose shopper was erased (None when nobody of this source ever was):
        their tokens recomputed with the key and matched against the erasure register."""
        register = self.store.read(ERASURES).where(F.col("source") == self.source).select("erasure_token")
        if register.isEmpty():
            return None
        raw: DataFrame | None = None
        for entity, columns in RAW_ID_COLUMNS.items():
            for column in columns if entity in flagged else ():
                part = flagged[entity].select(F.col(column).alias("raw_user_id"))
                raw = part if raw is None else raw.unionByName(part)
        if self.batch.truth is not None and raw is not None:
            raw = raw.unionByName(self.batch.truth.select("raw_user_id"))
        assert raw is not None
        tokens = id_map(raw, self.source, key).select("raw_user_id", erasure_token_column(F.col("user_id")).alias("erasure_token"))
        erased = self._persist(tokens.join(F.broadcast(register), "erasure_token", "left_semi").select("raw_user_id"))
        self.refused_raw_ids = [r[0] for r in erased.collect()]
        return erased if self.refused_raw_ids else None

    def _refuse_erased(self, erased: DataFrame, survivors: dict[str, DataFrame], rejected: dict[str, DataFrame]) -> None:
        """Rows of erased shoppers never reach bronze: refused under rule ``erased_user`` into the
        quarantine (so the reconciliation still balances and the refusal is counted) with their raw
        content withheld; their rows quarantined for another rule keep the rule, not the content."""
        for entity, columns in RAW_ID_COLUMNS.items():
            if entity not in survivors:
                continue
            marked = _mark_erased(survivors[entity], columns, erased)
            survivors[entity] = marked.where(~F.col("_erased")).drop("_erased")
            refused = (marked.where(F.col("_erased")).withColumn("_rule", F.lit(ERASED_RULE))
                       .withColumn("_detail", F.lit(WITHHELD)).withColumn("raw_row", F.lit(None).cast("string")))
            kept = _mark_erased(rejected[entity], columns, erased)
            kept = (kept.withColumn("raw_row", F.when(F.col("_erased"), F.lit(None).cast("string")).otherwise(F.col("raw_row")))
                    .withColumn("_detail", F.when(F.col("_erased"), F.lit(WITHHELD)).otherwise(F.col("_detail"))))
            rejected[entity] = kept.select(*rejected[entity].columns).unionByName(refused.select(*rejected[entity].columns))

    def _stage_events(self, survivors: DataFrame, to_pseudonym: DataFrame, flagged: DataFrame,
                      duplicates: DataFrame, quarantined: int) -> tuple[EntityLoad, Callable[[], EntityLoad]]:
        """The events' counts now; their append when the whole load has reconciled."""
        events = survivors.join(to_pseudonym, "raw_user_id").withColumn("source", F.lit(self.source)).withColumn(
            "load_id", F.lit(self.load_id))
        events = _conform(events, EVENTS)
        accepted = events.count()
        existing = self._existing_event_ids(events)
        # Counted on ids alone; the append recomputes the (cheap) join from the cached events,
        # against the same bronze files (the read pins them), rather than caching the wide rows again.
        already = events.select("event_id").join(existing, "event_id", "left_semi").count() if existing is not None else 0
        new_events = events.join(existing, "event_id", "left_anti") if existing is not None else events
        new_rows = accepted - already
        load = EntityLoad("events", flagged.count(), accepted, quarantined, duplicates.count(), already, new_rows)

        def commit() -> EntityLoad:
            if new_rows:
                self.store.append(new_events, EVENTS)
            return load

        return load, commit

    def _existing_event_ids(self, events: DataFrame) -> DataFrame | None:
        """Event ids already in bronze for the dates this load touches (partition-pruned)."""
        if self.store.version(EVENTS) == 0:
            return None
        bronze = self.store.read(EVENTS)
        if self.window is not None:
            bronze = bronze.where((F.col("event_date") >= F.lit(self.window[0])) & (F.col("event_date") < F.lit(self.window[1])))
        else:
            dates = [r[0] for r in events.select("event_date").distinct().collect()]
            bronze = bronze.where(F.col("event_date").isin(dates))
        return bronze.select("event_id")

    def _stage_merge(self, entity: str, spec: TableSpec, frame: DataFrame, flagged: dict[str, DataFrame],
                     duplicates: dict[str, DataFrame], quarantined: dict[str, int]) -> tuple[EntityLoad, Callable[[], EntityLoad]]:
        """An upserted entity's counts now (new vs already loaded are known after the merge)."""
        rows = self._persist(_conform(frame.withColumn("load_id", F.lit(self.load_id)), spec))
        accepted = rows.count()
        load = EntityLoad(entity, flagged[entity].count(), accepted, int(quarantined.get(entity, 0)),
                          duplicates[entity].count(), 0, 0)

        def commit() -> EntityLoad:
            inserted = self.store.merge(rows, spec).inserted
            return replace(load, already_loaded_rows=accepted - inserted, new_rows=inserted)

        return load, commit

    def _record_id_map(self, ids: DataFrame) -> None:
        rows = ids.withColumn("first_load_id", F.lit(self.load_id))
        existing = self.store.read(USER_ID_MAP).select("user_id", "source")
        new = _conform(rows.join(existing, ["user_id", "source"], "left_anti"), USER_ID_MAP)
        self.store.append(new, USER_ID_MAP)

    def _record(self, loads: list[EntityLoad]) -> None:
        start, end = self.window if self.window else (None, None)
        rows = [(self.load_id, self.source, x.entity, start, end, x.input_rows, x.accepted_rows, x.quarantined_rows,
                 x.duplicate_rows, x.already_loaded_rows, x.new_rows, self.load_time) for x in loads]
        frame = self.spark.createDataFrame(rows, INGEST_LOADS.schema)
        self.store.merge(frame, INGEST_LOADS)


def reconciliation_report(loads: list[EntityLoad], load_id: str, refused: dict[str, int] | None = None) -> dict[str, Any]:
    """Counts per entity; ``refused_erased``: rows of erased shoppers refused (part of quarantined)."""
    return {
        "load_id": load_id,
        "entities": {x.entity: {k: v for k, v in asdict(x).items() if k != "entity"} for x in loads},
        "balanced": all(x.balances() for x in loads),
        "refused_erased": dict(refused or {}),
    }
