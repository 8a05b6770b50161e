"""Right to erasure: a shopper's data leaves every table, file and model record we keep.

Deleting the id-map row alone would erase nobody: the keyed pseudonym comes back with the next
ingest, and raw ids also sit in the landing zone and the quarantine. So an erasure request
1. records a keyed token per shopper in ``restricted/erasures`` first (a later ingest of the same
   raw id is then refused and counted, even if this job dies half-way; rerunning it finishes),
2. tags every registered model version trained on data that held them ``needs_retrain``,
3. deletes their rows from every table that carries a pseudonym (:func:`user_tables`), their
   quarantined rows, their landed raw rows, and the training checkpoints that saw them,
4. vacuums with zero retention and drops the commit history of every table it touched, so no old
   data file, log statistic or delete predicate still names them.

Aggregates (feature statistics, audience sizes, category demand, evaluation metrics, ingestion
counts) hold no shopper id and are left as they are; the next run of their job recomputes them.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopper_profiles.config import Config
from shopper_profiles.features.build import repin_snapshots
from shopper_profiles.ingest.bronze import ERASURES, EVENTS, QUARANTINE
from shopper_profiles.ingest.pseudonym import erasure_token, load_key, pseudonym
from shopper_profiles.model.dataset import training_spec
from shopper_profiles.model.registry import TRAINING_SNAPSHOT_TAG
from shopper_profiles.storage import DeltaStore, TableSpec

logger = logging.getLogger(__name__)

RAW_ID_FIELDS = ("user_id", "raw_user_id", "src_user_id", "dst_user_id")
"""Columns (and raw-row JSON fields) of landed and quarantined rows that hold a raw shopper id."""
NEEDS_RETRAIN_TAG = "needs_retrain"


@dataclass(frozen=True)
class ErasureRequest:
    """One shopper to erase: the raw id as its source delivers it."""

    source: str
    raw_user_id: str


def read_requests(path: str, source: str | None) -> list[ErasureRequest]:
    """Requests from a file: one raw id per line (``--source`` says whose), or CSV lines
    ``source,raw_user_id`` (an optional header ``source,raw_user_id``). Blank lines are skipped."""
    file = Path(path)
    if not file.exists():
        raise ValueError(f"--users {path}: no such file; give one raw user id per line (or source,raw_user_id)")
    requests: list[ErasureRequest] = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.replace(" ", "") == "source,raw_user_id":
            continue
        if "," in text:
            given, raw = (part.strip() for part in text.split(",", 1))
        elif source:
            given, raw = source, text
        else:
            raise ValueError(f"{path}:{number}: a bare id needs --source (or write source,raw_user_id lines)")
        if not raw:
            raise ValueError(f"{path}:{number}: empty raw user id")
        requests.append(ErasureRequest(given, raw))
    if not requests:
        raise ValueError(f"--users {path} names nobody; nothing to erase")
    return sorted(set(requests), key=lambda r: (r.source, r.raw_user_id))


SHOPPER_COLUMNS = ("user_id", "src_user_id", "dst_user_id", "neighbour_id")
"""Columns that carry a shopper's pseudonym, in any table."""


def user_tables(config: Config) -> list[tuple[TableSpec, tuple[str, ...]]]:
    """Every table of the catalog that carries a shopper's pseudonym, with the columns that carry it."""
    from shopper_profiles.catalog import all_tables

    out = []
    for spec in all_tables(config):
        columns = tuple(c for c in SHOPPER_COLUMNS if c in spec.schema.fieldNames())
        if columns:
            out.append((spec, columns))
    return out


def _anti_join(erased: DataFrame, columns: Sequence[str]) -> Callable[[DataFrame], DataFrame]:
    """The table less every row whose ``columns`` hold an erased pseudonym (a join: the ids never
    appear in a query plan's literals or a commit's predicate)."""

    def keep(frame: DataFrame) -> DataFrame:
        for column in columns:
            frame = frame.join(F.broadcast(erased.withColumnRenamed("_pseudonym", column)), column, "left_anti")
        return frame

    return keep


class Erasure:
    """One erasure request over the whole lakehouse and the MLflow registry."""

    def __init__(self, spark: SparkSession, store: DeltaStore, config: Config, requests: Sequence[ErasureRequest]):
        self.spark, self.store, self.config = spark, store, config
        self.key = load_key(spark, config)
        self.requests = list(requests)
        self.pseudonyms = sorted({pseudonym(self.key, r.source, r.raw_user_id) for r in self.requests})
        self._affected: set[date] = set()  # training snapshots whose models saw them (set by _tag_models)
        self.erased_at = datetime.now(UTC).replace(tzinfo=None)
        self.request_id = f"erasure-{self.erased_at:%Y%m%dT%H%M%S}"

    def run(self) -> dict[str, Any]:
        report: dict[str, Any] = {"request_id": self.request_id, "shoppers": len(self.pseudonyms)}
        report["registered"] = self._register()
        report["models_needing_retrain"] = self._tag_models()
        deleted: dict[str, int] = {}
        touched: list[TableSpec] = []
        erased = self.spark.createDataFrame([(p,) for p in self.pseudonyms], "_pseudonym string")
        for spec, columns in user_tables(self.config):
            if not self.store.exists(spec):
                continue
            deleted[spec.name] = self.store.rewrite_without(spec, _anti_join(erased, columns))
            touched.append(spec)
            logger.info("erasure %s: %s -%d rows", self.request_id, spec.name, deleted[spec.name])
        # The published feature snapshots must point at the versions without them, or readers would
        # keep reading (and vacuum would break) the old ones.
        repin_snapshots(self.spark, self.store, self.config)
        deleted["quarantine"] = self._scrub_quarantine()
        touched.append(QUARANTINE)
        report["deleted_rows"] = deleted
        report["landing_rows"] = sum(scrub_landing(self.spark, self.config, source, ids)
                                     for source, ids in self._raw_ids_by_source().items())
        report["checkpoints_removed"] = self._remove_checkpoints()
        for spec in touched:
            self.store.vacuum(spec, retention_hours=0)
            self.store.purge_history(spec)
        report["tables_purged"] = [spec.name for spec in touched]
        return report

    def _raw_ids_by_source(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for r in self.requests:
            out.setdefault(r.source, []).append(r.raw_user_id)
        return out

    def _register(self) -> int:
        """The keyed tokens go in first: from here on ingestion refuses these shoppers."""
        rows = sorted({(erasure_token(pseudonym(self.key, r.source, r.raw_user_id)), r.source, self.request_id, self.erased_at)
                       for r in self.requests})
        self.store.create(ERASURES)
        return self.store.merge(self.spark.createDataFrame(rows, ERASURES.schema), ERASURES).inserted

    def _first_event(self) -> date | None:
        if not self.store.exists(EVENTS):
            return None
        found = self.store.read(EVENTS).where(F.col("user_id").isin(self.pseudonyms)).agg(F.min("event_date")).first()
        return found[0] if found else None

    def _training_snapshots(self) -> set[date]:
        spec = training_spec(self.config.model.max_len)
        if not self.store.exists(spec):
            return set()
        rows = self.store.read(spec).where(F.col("user_id").isin(self.pseudonyms)).select("snapshot_date").distinct()
        return {r[0] for r in rows.collect()}

    def _tag_models(self) -> list[str]:
        """Tag every registered version whose training data held one of them: trained at D on
        examples built from events before D, so any shopper with an event before D (or a row in
        D's training set) is in it. The weights cannot forget: retraining is the remedy."""
        import mlflow
        from mlflow import MlflowClient

        first_event, snapshots = self._first_event(), self._training_snapshots()
        self._affected = set(snapshots)
        mlflow.set_tracking_uri(self.config.mlflow_tracking_uri)
        client = MlflowClient()
        name = self.config.mlflow.registered_model
        try:
            versions = client.search_model_versions(f"name = '{name}'")
        except Exception:  # noqa: BLE001 - no registry yet: nothing was trained
            return []
        tagged = []
        for version in versions:
            tag = client.get_run(str(version.run_id)).data.tags.get(TRAINING_SNAPSHOT_TAG)
            if not tag:
                continue
            trained_at = date.fromisoformat(tag)
            if trained_at in snapshots or (first_event is not None and first_event < trained_at):
                self._affected.add(trained_at)
                client.set_model_version_tag(name, str(version.version), NEEDS_RETRAIN_TAG, "true")
                client.set_model_version_tag(name, str(version.version), f"{NEEDS_RETRAIN_TAG}_reason",
                                             f"{self.request_id}: trained on data of {len(self.pseudonyms)} erased shopper(s)")
                tagged.append(str(version.version))
        if tagged:
            logger.warning("model versions %s of %s were trained on erased shoppers' data and are tagged %s=true: "
                           "retrain (jobs/train_profile_model.py) and promote a new champion", ", ".join(tagged), name,
                           NEEDS_RETRAIN_TAG)
        return tagged

    def _remove_checkpoints(self) -> int:
        """Training checkpoints of the snapshots that held them (a resume must not continue from
        weights that saw them)."""
        folder = Path(self.config.checkpoint_root)
        removed = 0
        for path in sorted(folder.glob("*")) if folder.exists() else []:
            match = re.match(r"(\d{4}-\d{2}-\d{2})-", path.name)
            if match and date.fromisoformat(match.group(1)) in self._affected:
                shutil.rmtree(path)
                removed += 1
        return removed

    def _scrub_quarantine(self) -> int:
        """Quarantined raw rows that name them: each affected load's partition rewritten without them."""
        if not self.store.exists(QUARANTINE):
            return 0
        erased = self.spark.createDataFrame([(r.source, r.raw_user_id) for r in self.requests], "source string, _raw string")
        ids = [F.get_json_object(F.col("raw_row"), f"$.{f}") for f in RAW_ID_FIELDS]
        return self.store.rewrite_without(QUARANTINE, lambda frame: _without_erased(frame, erased, ids))


def _without_erased(frame: DataFrame, erased: DataFrame, ids: Sequence[Any]) -> DataFrame:
    """``frame`` less the rows where any of the ``ids`` expressions (trimmed) is an erased raw id
    of the row's source (``erased``: source, _raw). Rows with no id are kept."""
    columns = frame.columns
    for expression in ids:
        frame = frame.withColumn("_raw", F.trim(expression)).join(F.broadcast(erased), ["source", "_raw"], "left_anti")
    return frame.select(*columns)


def scrub_landing(spark: SparkSession, config: Config, source: str, raw_ids: Sequence[str]) -> int:
    """Remove the rows of ``raw_ids`` from every landed Parquet folder of ``source``: each folder
    that holds any is rewritten beside itself and swapped in (old folder renamed aside first, so
    a crash leaves one complete copy). Returns the rows removed."""
    if not raw_ids:
        return 0
    jvm: Any = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path
    root = hadoop_path(f"{config.lakehouse_root}/landing/{source}")
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(root):
        return 0
    erased = spark.createDataFrame([(source, r) for r in sorted(set(raw_ids))], "source string, _raw string")
    removed = 0
    for load in fs.listStatus(root):
        for landed in fs.listStatus(load.getPath()) if load.isDirectory() else []:
            path = landed.getPath().toString()
            if not landed.isDirectory() or path.endswith((".erasing", ".erased")):
                continue
            frame = spark.read.parquet(path)
            columns = [c for c in frame.columns if c in RAW_ID_FIELDS]
            if not columns:
                continue
            kept = _without_erased(frame.withColumn("source", F.lit(source)), erased, [F.col(c) for c in columns])
            before, after = frame.count(), kept.count()
            if before == after:
                continue
            kept.select(*frame.columns).write.mode("overwrite").parquet(path + ".erasing")
            fs.rename(landed.getPath(), hadoop_path(path + ".erased"))
            fs.rename(hadoop_path(path + ".erasing"), landed.getPath())
            fs.delete(hadoop_path(path + ".erased"), True)
            removed += before - after
            logger.info("erasure: landing %s -%d rows", path, before - after)
    return removed
