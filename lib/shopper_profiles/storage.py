"""The one storage module: every Delta read, write, merge, delete, optimize and vacuum.

Two engines behind one interface (:class:`DeltaStore`):

* ``delta-rs`` (embedded default, local and CI): Spark executors write Parquet into a
  staging folder inside the table; the files are moved into the table's hive layout and
  committed with **one** atomic delta-rs write transaction of add actions. The driver
  never collects the table; a failed write leaves the table at its previous version.
* ``spark-delta``: native ``format("delta")`` and ``delta.tables.DeltaTable`` for
  Databricks or ``spark-submit --packages io.delta:delta-spark_2.12:3.3.2``.

Nothing outside this module knows table paths or formats.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from shopper_profiles.config import Config
from shopper_profiles.spark import delta_classes_available

logger = logging.getLogger(__name__)

WindowFilter = Mapping[str, Any]
"""Partition window: column -> value or list of values, e.g. {"snapshot_date": [d1, d2]}."""

_PARTITION_TYPES = (T.StringType, T.DateType, T.IntegerType, T.LongType, T.ShortType, T.BooleanType)
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


class SchemaMismatchError(ValueError):
    """A frame's schema disagrees with the table's declared schema."""


class TableNotFoundError(ValueError):
    """The table has not been created yet."""

    @classmethod
    def of(cls, spec: TableSpec, path: str, config: Config) -> TableNotFoundError:
        """The error naming the job that writes the table (what to run first)."""
        from shopper_profiles.catalog import writer_of

        writer = writer_of(spec.name, config)
        hint = f"run {writer} first" if writer else "create it first (store.create)"
        return cls(f"table {spec.name} does not exist at {path}; {hint} (or check lakehouse.root and --env)")


@dataclass(frozen=True)
class TableSpec:
    """A table declared once: its logical name (a key of ``tables:`` in config), schema,
    partition columns and business keys (used by merge and data-quality checks)."""

    name: str
    schema: T.StructType
    partition_by: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    description: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = self.schema.fieldNames()
        for column in (*self.partition_by, *self.keys):
            if column not in names:
                raise ValueError(f"table {self.name}: column {column!r} is not in its schema {names}")
        for column in self.partition_by:
            dtype = self.schema[column].dataType
            if not isinstance(dtype, _PARTITION_TYPES):
                raise ValueError(
                    f"table {self.name}: partition column {column!r} has type {dtype.simpleString()}; "
                    "use a string, date, integer or boolean column"
                )


@dataclass(frozen=True)
class MergeResult:
    inserted: int
    updated: int
    version: int


# --------------------------------------------------------------------------- schema checks


def nullable(schema: T.StructType) -> T.StructType:
    """Delta stores every column as nullable (as Spark's Delta writer does); keys are
    checked by data-quality rules instead, so engines never disagree on nullability."""
    return T.StructType([T.StructField(f.name, f.dataType, True, f.metadata) for f in schema.fields])


def _loose(dtype: T.DataType) -> T.DataType:
    """The type with every nested nullability flag set: Delta compares types, not null-ness."""
    if isinstance(dtype, T.ArrayType):
        return T.ArrayType(_loose(dtype.elementType), True)
    if isinstance(dtype, T.MapType):
        return T.MapType(_loose(dtype.keyType), _loose(dtype.valueType), True)
    if isinstance(dtype, T.StructType):
        return T.StructType([T.StructField(f.name, _loose(f.dataType), True) for f in dtype.fields])
    return dtype


def conform(df: DataFrame, table_schema: T.StructType, table: str, evolve: bool = False) -> T.StructType:
    """Check ``df`` against the table schema; return the schema to write.

    Missing columns and type changes always fail, naming the column. Extra columns fail
    unless ``evolve`` (additive evolution only when asked); they are appended at the end.
    """
    existing = {f.name: f.dataType for f in table_schema.fields}
    incoming = {f.name: f.dataType for f in df.schema.fields}
    lower_existing = {name.lower(): name for name in existing}
    for name in incoming:
        clash = lower_existing.get(name.lower())
        if clash is not None and clash != name:
            raise SchemaMismatchError(
                f"table {table}: column {name!r} differs only in case from {clash!r}; rename it"
            )
    missing = [name for name in existing if name not in incoming]
    if missing:
        raise SchemaMismatchError(
            f"table {table}: the frame lacks column(s) {missing}; the table's schema is "
            f"{table_schema.simpleString()}"
        )
    for name, dtype in existing.items():
        if _loose(incoming[name]) != _loose(dtype):
            raise SchemaMismatchError(
                f"table {table}: column {name!r} is {incoming[name].simpleString()} in the frame but "
                f"{dtype.simpleString()} in the table; cast it explicitly before writing"
            )
    extra = [f for f in df.schema.fields if f.name not in existing]
    if extra and not evolve:
        raise SchemaMismatchError(
            f"table {table}: column(s) {[f.name for f in extra]} are not in the table; drop them or "
            "write with evolve=True to add them (additive schema evolution)"
        )
    return nullable(T.StructType(list(table_schema.fields) + extra))


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        raise TypeError("timestamp values cannot be partition windows; partition by a date column")
    if isinstance(value, date):
        return f"'{value.isoformat()}'"
    text = str(value).replace("'", "''")
    return f"'{text}'"


def _window_values(window: WindowFilter) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for column, value in window.items():
        values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
        if not values:
            raise ValueError(f"window on {column!r} has no values")
        out[column] = values
    return out


def window_predicate(window: WindowFilter) -> str:
    """SQL predicate for a partition window, valid in Spark SQL and DataFusion."""
    clauses = []
    for column, values in _window_values(window).items():
        literals = ", ".join(_sql_literal(v) for v in values)
        clauses.append(f"`{column}` IN ({literals})")
    return " AND ".join(clauses)


def _partition_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- interface


class DeltaStore(ABC):
    """Operations every engine offers, with the same results (see tests/test_storage_contract.py)."""

    engine: str

    def __init__(self, spark: SparkSession, config: Config):
        self.spark = spark
        self.config = config
        self.root = config.lakehouse_root

    def path(self, spec: TableSpec | str) -> str:
        name = spec.name if isinstance(spec, TableSpec) else spec
        try:
            relative = getattr(self.config.tables, name)
        except AttributeError as e:
            raise ValueError(f"table {name!r} has no path; add it under `tables:` in conf/base.yaml") from e
        return f"{self.root}/{relative}"

    @abstractmethod
    def exists(self, spec: TableSpec) -> bool: ...

    @abstractmethod
    def create(self, spec: TableSpec) -> bool:
        """Create the table empty with its declared schema; False when it already existed."""

    @abstractmethod
    def append(self, df: DataFrame, spec: TableSpec, evolve: bool = False) -> int:
        """Append rows; returns the new table version."""

    @abstractmethod
    def overwrite(
        self, df: DataFrame, spec: TableSpec, window: WindowFilter | None = None, evolve: bool = False,
        target_files: int | None = None,
    ) -> int:
        """Replace the whole table, or only the partitions in ``window`` (replaceWhere).

        Rows outside the window fail the write: a window overwrite never touches other windows.
        ``target_files`` spreads each partition over that many files (readers that shard by
        file or row group, like Petastorm, need more than one).
        """

    @abstractmethod
    def merge(self, df: DataFrame, spec: TableSpec, keys: Sequence[str] | None = None) -> MergeResult:
        """Upsert on the business keys: matched rows are updated, others inserted."""

    @abstractmethod
    def delete(self, spec: TableSpec, predicate: str) -> int:
        """Delete rows matching a SQL predicate; returns the number of rows deleted."""

    def rewrite_without(self, spec: TableSpec, keep: Callable[[DataFrame], DataFrame]) -> int:
        """Remove rows by rewriting, in one commit, only the partitions (unpartitioned: the table)
        where ``keep(table)`` drops any; returns the rows removed. For removals a SQL predicate
        cannot say (a join against a list of ids that must not appear in the commit log) and for
        tables delta-rs's ``delete`` cannot rewrite (map columns)."""
        frame = self.read(spec)
        kept = keep(frame)
        parts = list(spec.partition_by)
        if not parts:
            rows, remaining = frame.count(), kept.count()
            if rows != remaining:
                self.overwrite(kept.localCheckpoint(), spec)
            return rows - remaining
        before: dict[tuple[Any, ...], int] = {tuple(r)[:-1]: r[-1] for r in frame.groupBy(*parts).count().collect()}
        after: dict[tuple[Any, ...], int] = {tuple(r)[:-1]: r[-1] for r in kept.groupBy(*parts).count().collect()}
        changed = [p for p, n in before.items() if after.get(p, 0) != n]
        if not changed:
            return 0
        window: WindowFilter = {c: sorted({p[i] for p in changed}) for i, c in enumerate(parts)}
        self.overwrite(kept.where(F.expr(window_predicate(window))).localCheckpoint(), spec, window=window)
        return sum(before[p] - after.get(p, 0) for p in changed)

    @abstractmethod
    def read(self, spec: TableSpec, version: int | None = None) -> DataFrame:
        """The table (or its state at ``version``) as a Spark DataFrame."""

    @abstractmethod
    def version(self, spec: TableSpec) -> int: ...

    @abstractmethod
    def history(self, spec: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits newest first: version, timestamp (ms), operation, parameters."""

    @abstractmethod
    def optimize(self, spec: TableSpec, zorder_by: Sequence[str] = ()) -> dict[str, Any]:
        """Compact small files (and Z-order when columns are given)."""

    @abstractmethod
    def vacuum(self, spec: TableSpec, retention_hours: int | None = None) -> int:
        """Delete files no longer referenced and older than the retention; returns how many."""

    @abstractmethod
    def file_uris(self, spec: TableSpec, version: int | None = None) -> list[str]:
        """The table's live Parquet files (for Petastorm and DuckDB readers)."""

    @abstractmethod
    def purge_history(self, spec: TableSpec) -> None:
        """End the table's time travel here: drop the commit log before the current version, so no
        old entry (file statistics, a delete predicate) still names what was deleted. Erasure runs
        it after ``delete`` and a zero-hour ``vacuum``."""

    def schema(self, spec: TableSpec) -> T.StructType:
        return self.read(spec).schema

    def arrow_dataset(self, spec: TableSpec, version: int | None = None) -> pads.Dataset:
        """The live files as a pyarrow dataset with hive partitions (DuckDB, Petastorm-style readers)."""
        files = self.file_uris(spec, version)
        schema = to_arrow_schema(nullable(self.read(spec, version).schema))
        return pads.dataset([f.removeprefix("file://") for f in files], format="parquet", schema=schema,
                            partitioning=pads.partitioning(flavor="hive") if spec.partition_by else None,
                            partition_base_dir=self.path(spec))

    def _check_merge_source(self, df: DataFrame, spec: TableSpec, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError(f"table {spec.name}: merge needs keys; declare TableSpec.keys or pass keys=")
        bad = (
            df.groupBy(*keys)
            .count()
            .where(F.col("count") > 1)
            .limit(1)
            .collect()
        )
        if bad:
            raise ValueError(
                f"table {spec.name}: the merge source has duplicate keys {dict(bad[0].asDict())}; "
                "deduplicate it first (a target row may match only one source row)"
            )
        null_keys = df.where(" OR ".join(f"`{k}` IS NULL" for k in keys)).limit(1).count()
        if null_keys:
            raise ValueError(f"table {spec.name}: the merge source has null values in key columns {list(keys)}")


# --------------------------------------------------------------------------- delta-rs engine


class DeltaRsStore(DeltaStore):
    """Spark computes and writes Parquet; deltalake (delta-rs) commits atomically."""

    engine = "delta-rs"

    def _table(self, spec: TableSpec, version: int | None = None) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError as RsNotFound

        try:
            return DeltaTable(self.path(spec), version=version)
        except RsNotFound as e:
            raise TableNotFoundError.of(spec, self.path(spec), self.config) from e

    def exists(self, spec: TableSpec) -> bool:
        try:
            self._table(spec)
        except TableNotFoundError:
            return False
        return True

    def create(self, spec: TableSpec) -> bool:
        from deltalake import write_deltalake

        if self.exists(spec):
            return False
        arrow_schema = to_arrow_schema(nullable(spec.schema))
        write_deltalake(
            self.path(spec),
            arrow_schema.empty_table(),
            partition_by=list(spec.partition_by) or None,
            description=spec.description or None,
            configuration=dict(spec.properties) or None,
            mode="error",
        )
        logger.debug("created table %s at %s", spec.name, self.path(spec))
        return True

    def _table_schema(self, dt: Any) -> T.StructType:
        return from_arrow_schema(dt.schema().to_pyarrow())

    def append(self, df: DataFrame, spec: TableSpec, evolve: bool = False) -> int:
        return self._write(df, spec, mode="append", window=None, evolve=evolve)

    def overwrite(
        self, df: DataFrame, spec: TableSpec, window: WindowFilter | None = None, evolve: bool = False,
        target_files: int | None = None,
    ) -> int:
        return self._write(df, spec, mode="overwrite", window=window, evolve=evolve, target_files=target_files)

    def _write(
        self, df: DataFrame, spec: TableSpec, mode: str, window: WindowFilter | None, evolve: bool,
        target_files: int | None = None,
    ) -> int:
        dt = self._table(spec)
        table_path = self.path(spec)
        partition_by = list(dt.metadata().partition_columns)
        write_schema = conform(df, self._table_schema(dt), spec.name, evolve)
        filters = None
        if window is not None:
            values = _window_values(window)
            not_partitions = [c for c in values if c not in partition_by]
            if not_partitions:
                raise ValueError(
                    f"table {spec.name}: window overwrite on {not_partitions} needs partition columns "
                    f"(the table is partitioned by {partition_by})"
                )
            filters = [(c, "in", [_partition_string(v) for v in vs]) for c, vs in values.items()]
        staging = f"{table_path}/_staging/{uuid.uuid4().hex}"
        moved: list[str] = []
        try:
            ordered = df.select(*[F.col(f"`{f.name}`") for f in write_schema.fields])
            if target_files:
                spread = [F.col(f"`{c}`") for c in (*partition_by, *spec.keys)] or [F.rand(seed=0)]
                ordered = ordered.repartition(target_files, *spread)
            elif partition_by:  # one file per partition value per task, not one per (task, value)
                ordered = ordered.repartition(*[F.col(f"`{c}`") for c in partition_by])
            ordered.write.mode("error").partitionBy(*partition_by).parquet(staging)
            actions = _adopt_staged_files(staging, table_path, moved)
            if window is not None:
                _check_window(actions, _window_values(window), spec.name)
            arrow_schema = to_arrow_schema(write_schema)
            if len(write_schema.fields) > len(dt.schema().fields):
                _commit_added_columns(dt, arrow_schema, table_path)
                dt = self._table(spec)
            dt._table.create_write_transaction(actions, mode, partition_by, arrow_schema, filters, None)
        except BaseException:
            for path in moved:  # never referenced by a commit: remove so nothing is orphaned
                _remove(path)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            _remove_empty_parent(staging)
        version = int(self._table(spec).version())
        logger.debug("%s %s: %d files committed as version %d", mode, spec.name, len(actions), version)
        return version

    def merge(self, df: DataFrame, spec: TableSpec, keys: Sequence[str] | None = None) -> MergeResult:
        keys = list(keys or spec.keys)
        self._check_merge_source(df, spec, keys)
        dt = self._table(spec)
        write_schema = conform(df, self._table_schema(dt), spec.name, evolve=False)
        staging = f"{self.path(spec)}/_staging/{uuid.uuid4().hex}"
        try:
            # The source goes through Parquet and streams into delta-rs batch by batch.
            df.select(*[F.col(f"`{f.name}`") for f in write_schema.fields]).write.parquet(staging)
            source = pads.dataset(staging, format="parquet", schema=to_arrow_schema(write_schema))
            if source.count_rows() == 0:
                return MergeResult(inserted=0, updated=0, version=int(dt.version()))
            # delta-rs 0.18 panics on a zero-row batch, which Spark's empty partitions produce.
            predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)

            def attempt() -> dict[str, Any]:
                batches = (b for b in source.to_batches() if b.num_rows > 0)
                reader = pa.RecordBatchReader.from_batches(source.schema, batches)
                return dict(
                    self._table(spec).merge(source=reader, predicate=predicate, source_alias="s", target_alias="t")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute()
                )

            metrics = _retry_on_conflict(attempt, spec.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            _remove_empty_parent(staging)
        return MergeResult(
            inserted=int(metrics.get("num_target_rows_inserted", 0)),
            updated=int(metrics.get("num_target_rows_updated", 0)),
            version=int(self._table(spec).version()),
        )

    def delete(self, spec: TableSpec, predicate: str) -> int:
        metrics = self._table(spec).delete(predicate)
        return int(metrics.get("num_deleted_rows", 0))

    def file_uris(self, spec: TableSpec, version: int | None = None) -> list[str]:
        return [str(u) for u in self._table(spec, version).file_uris()]

    def arrow_dataset(self, spec: TableSpec, version: int | None = None) -> pads.Dataset:
        return self._table(spec, version).to_pyarrow_dataset()

    def read(self, spec: TableSpec, version: int | None = None) -> DataFrame:
        dt = self._table(spec, version)
        schema = self._table_schema(dt)
        files = [str(u) for u in dt.file_uris()]
        if not files:
            return self.spark.createDataFrame([], schema)
        # The file list, never the directory: removed (not yet vacuumed) files stay on disk.
        frame = self.spark.read.schema(schema).option("basePath", self.path(spec)).parquet(*files)
        return frame.select(*[F.col(f"`{name}`") for name in schema.fieldNames()])

    def version(self, spec: TableSpec) -> int:
        return int(self._table(spec).version())

    def history(self, spec: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
        return [
            {
                "version": int(entry.get("version", -1)),
                "timestamp": int(entry.get("timestamp", 0)),
                "operation": str(entry.get("operation", "")),
                "parameters": dict(entry.get("operationParameters") or {}),
            }
            for entry in self._table(spec).history(limit)
        ]

    def optimize(self, spec: TableSpec, zorder_by: Sequence[str] = ()) -> dict[str, Any]:
        dt = self._table(spec)
        if zorder_by:
            return dict(dt.optimize.z_order(list(zorder_by)))
        return dict(dt.optimize.compact())

    def vacuum(self, spec: TableSpec, retention_hours: int | None = None) -> int:
        hours = self.config.lakehouse.vacuum_retention_hours if retention_hours is None else retention_hours
        removed = self._table(spec).vacuum(
            retention_hours=hours, dry_run=False, enforce_retention_duration=False
        )
        return len(removed)


    def purge_history(self, spec: TableSpec) -> None:
        dt = self._table(spec)
        retention = "delta.logRetentionDuration"
        previous = dt.metadata().configuration.get(retention) or "interval 30 days"
        dt.alter.set_table_properties({retention: "interval 0 seconds"})
        dt = self._table(spec)
        dt.create_checkpoint()
        dt.cleanup_metadata()  # every log file before the checkpoint is now expired
        self._table(spec).alter.set_table_properties({retention: previous})


MERGE_ATTEMPTS = 5


class ConcurrentWriteError(RuntimeError):
    """Another writer kept committing to the same table: this write gave up, having changed nothing."""


def _retry_on_conflict(attempt: Callable[[], dict[str, Any]], table: str) -> dict[str, Any]:
    """Run a read-modify-write commit (a merge), re-reading the table and running it again when a
    concurrent writer committed first (delta-rs's optimistic concurrency: the loser's commit fails
    whole, so a retry neither loses nor duplicates rows)."""
    from deltalake.exceptions import CommitFailedError

    for number in range(1, MERGE_ATTEMPTS + 1):
        try:
            return attempt()
        except CommitFailedError as error:
            if number == MERGE_ATTEMPTS:
                raise ConcurrentWriteError(
                    f"table {table}: {MERGE_ATTEMPTS} merge attempts lost to concurrent writers ({error}); nothing of "
                    "this merge was committed -- rerun the job (merges are idempotent) or stop the other writer") from error
            logger.info("table %s: a concurrent writer committed first; merging again (attempt %d)", table, number + 1)
            time.sleep(0.05 * number)
    raise AssertionError("unreachable")


def _adopt_staged_files(staging: str, table_path: str, moved: list[str]) -> list[Any]:
    """Move Spark's staged Parquet files into the table's hive layout and describe each as
    a Delta add action (path, size, partition values, column stats). Each moved path goes into
    ``moved`` as soon as it lands, so a failure half-way still knows what to remove."""
    from deltalake.writer import AddAction, DeltaJSONEncoder, get_file_stats_from_metadata

    actions: list[Any] = []
    now_ms = int(time.time() * 1000)
    for folder, _dirs, files in os.walk(staging):
        for name in sorted(files):
            if not name.endswith(".parquet"):
                continue  # _SUCCESS, .crc checksums
            relative_dir = os.path.relpath(folder, staging)
            relative_dir = "" if relative_dir == "." else relative_dir
            partition_values: dict[str, str | None] = {}
            for part in filter(None, relative_dir.split(os.sep)):
                key, _, raw = part.partition("=")
                partition_values[key] = None if raw == _HIVE_NULL else unquote(raw)
            relative = f"{relative_dir}/{name}" if relative_dir else name
            target = os.path.join(table_path, relative)
            metadata = pq.read_metadata(os.path.join(folder, name))
            if metadata.num_rows == 0:
                continue  # Spark writes empty files for empty tasks; they carry nothing
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(folder, name), target)
            moved.append(target)
            stats = get_file_stats_from_metadata(metadata, num_indexed_cols=32, columns_to_collect_stats=None)
            actions.append(
                AddAction(
                    relative,
                    os.path.getsize(target),
                    partition_values,
                    now_ms,
                    True,
                    json.dumps(stats, cls=DeltaJSONEncoder),
                )
            )
    return actions


def _check_window(actions: Iterable[Any], window: dict[str, list[Any]], table: str) -> None:
    allowed = {c: {_partition_string(v) for v in vs} for c, vs in window.items()}
    for action in actions:
        for column, values in allowed.items():
            value = action.partition_values.get(column)
            if value not in values:
                raise ValueError(
                    f"table {table}: the frame holds rows with {column}={value}, outside the window "
                    f"{sorted(str(v) for v in values)} being overwritten; filter the frame to the window"
                )


def _commit_added_columns(dt: Any, arrow_schema: pa.Schema, table_path: str) -> None:
    """Commit a metaData action that appends new nullable columns (additive evolution).

    deltalake 0.18.2 offers no API to change the schema without writing data, so this
    writes the one documented action itself, with put-if-absent semantics on the log.
    """
    from deltalake import Schema

    if "://" in table_path and not table_path.startswith("file://"):
        raise ValueError("schema evolution with the delta-rs engine needs a local lakehouse; use spark-delta")
    meta = dt.metadata()
    version = int(dt.version()) + 1
    actions = [
        {"commitInfo": {"timestamp": int(time.time() * 1000), "operation": "ADD COLUMNS",
                        "operationParameters": {"columns": json.dumps(arrow_schema.names)},
                        "clientVersion": "shopper_profiles"}},
        {"metaData": {"id": meta.id, "name": meta.name, "description": meta.description,
                      "format": {"provider": "parquet", "options": {}},
                      "schemaString": Schema.from_pyarrow(arrow_schema).to_json(),
                      "partitionColumns": list(meta.partition_columns),
                      "configuration": dict(meta.configuration),
                      "createdTime": meta.created_time}},
    ]
    log_file = os.path.join(table_path, "_delta_log", f"{version:020d}.json")
    try:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as e:
        raise RuntimeError(f"concurrent commit to {table_path} at version {version}; retry the write") from e
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(json.dumps(a) for a in actions) + "\n")


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _remove_empty_parent(staging: str) -> None:
    with contextlib.suppress(OSError):  # another write is staging too, or it is already gone
        os.rmdir(os.path.dirname(staging))


# --------------------------------------------------------------------------- spark-delta engine


class SparkDeltaStore(DeltaStore):
    """Native Delta Lake in the JVM (Databricks, or the delta-spark jars on the classpath)."""

    engine = "spark-delta"

    def _delta_table(self, spec: TableSpec) -> Any:
        from delta.tables import DeltaTable

        if not self.exists(spec):
            raise TableNotFoundError.of(spec, self.path(spec), self.config)
        return DeltaTable.forPath(self.spark, self.path(spec))

    def exists(self, spec: TableSpec) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self.path(spec)))

    def create(self, spec: TableSpec) -> bool:
        from delta.tables import DeltaTable

        if self.exists(spec):
            return False
        builder = DeltaTable.createIfNotExists(self.spark).location(self.path(spec))
        builder = builder.addColumns(nullable(spec.schema))
        if spec.partition_by:
            builder = builder.partitionedBy(*spec.partition_by)
        if spec.description:
            builder = builder.comment(spec.description)
        for key, value in spec.properties.items():
            builder = builder.property(key, value)
        builder.execute()
        return True

    def _writer(self, df: DataFrame, spec: TableSpec, evolve: bool) -> Any:
        write_schema = conform(df, self.read(spec).schema, spec.name, evolve)
        writer = df.select(*[F.col(f"`{f.name}`") for f in write_schema.fields]).write.format("delta")
        return writer.option("mergeSchema", "true") if evolve else writer

    def append(self, df: DataFrame, spec: TableSpec, evolve: bool = False) -> int:
        self._writer(df, spec, evolve).mode("append").save(self.path(spec))
        return self.version(spec)

    def overwrite(
        self, df: DataFrame, spec: TableSpec, window: WindowFilter | None = None, evolve: bool = False,
        target_files: int | None = None,
    ) -> int:
        if target_files:
            df = df.repartition(target_files, *[F.col(f"`{c}`") for c in spec.keys])
        writer = self._writer(df, spec, evolve).mode("overwrite")
        if window is not None:
            writer = writer.option("replaceWhere", window_predicate(window))
        writer.save(self.path(spec))
        return self.version(spec)

    def merge(self, df: DataFrame, spec: TableSpec, keys: Sequence[str] | None = None) -> MergeResult:
        keys = list(keys or spec.keys)
        self._check_merge_source(df, spec, keys)
        conform(df, self.read(spec).schema, spec.name, evolve=False)
        predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        (
            self._delta_table(spec).alias("t").merge(df.alias("s"), predicate)
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
        )
        metrics = self._last_metrics(spec)
        return MergeResult(
            inserted=int(metrics.get("numTargetRowsInserted", 0)),
            updated=int(metrics.get("numTargetRowsUpdated", 0)),
            version=self.version(spec),
        )

    def _last_metrics(self, spec: TableSpec) -> dict[str, str]:
        row = self._delta_table(spec).history(1).select("operationMetrics").collect()[0]
        return dict(row["operationMetrics"] or {})

    def delete(self, spec: TableSpec, predicate: str) -> int:
        self._delta_table(spec).delete(predicate)
        return int(self._last_metrics(spec).get("numDeletedRows", 0))

    def read(self, spec: TableSpec, version: int | None = None) -> DataFrame:
        if not self.exists(spec):
            raise TableNotFoundError.of(spec, self.path(spec), self.config)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(spec))

    def file_uris(self, spec: TableSpec, version: int | None = None) -> list[str]:
        return [str(f) for f in self.read(spec, version).inputFiles()]

    def version(self, spec: TableSpec) -> int:
        return int(self._delta_table(spec).history(1).select("version").collect()[0][0])

    def history(self, spec: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
        rows = self._delta_table(spec).history(limit).collect() if limit else self._delta_table(spec).history().collect()
        return [
            {
                "version": int(r["version"]),
                "timestamp": int(r["timestamp"].timestamp() * 1000),
                "operation": str(r["operation"]),
                "parameters": dict(r["operationParameters"] or {}),
            }
            for r in rows
        ]

    def optimize(self, spec: TableSpec, zorder_by: Sequence[str] = ()) -> dict[str, Any]:
        builder = self._delta_table(spec).optimize()
        result = builder.executeZOrderBy(*zorder_by) if zorder_by else builder.executeCompaction()
        return {"metrics": result.collect()[0]["metrics"].asDict(recursive=True)}

    def vacuum(self, spec: TableSpec, retention_hours: int | None = None) -> int:
        hours = self.config.lakehouse.vacuum_retention_hours if retention_hours is None else retention_hours
        self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        before = set(self._data_files_on_disk(spec))
        self._delta_table(spec).vacuum(float(hours))
        return len(before - set(self._data_files_on_disk(spec)))

    def purge_history(self, spec: TableSpec) -> None:
        # Delta on Spark drops expired log files only when it writes a checkpoint, and cuts at day
        # boundaries: the old commits (statistics and predicates, no row data once vacuumed) go at
        # the first checkpoint a day later. Not exercised here (no Delta jars; see README).
        path = self.path(spec)
        retention = "delta.logRetentionDuration"
        properties = self._delta_table(spec).detail().collect()[0]["properties"] or {}
        previous = properties.get(retention, "interval 30 days")
        self.spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{retention}' = 'interval 0 seconds')")
        jvm: Any = self.spark.sparkContext._jvm
        jvm.org.apache.spark.sql.delta.DeltaLog.forTable(self.spark._jsparkSession, path).checkpoint()
        self.spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{retention}' = '{previous}')")

    def _data_files_on_disk(self, spec: TableSpec) -> list[str]:
        jvm: Any = self.spark.sparkContext._jvm
        jsc: Any = self.spark.sparkContext._jsc
        hpath = jvm.org.apache.hadoop.fs.Path(self.path(spec))
        fs = hpath.getFileSystem(jsc.hadoopConfiguration())
        it = fs.listFiles(hpath, True)
        out = []
        while it.hasNext():
            p = it.next().getPath().toString()
            if p.endswith(".parquet") and "/_delta_log/" not in p:
                out.append(p)
        return out


def maintain(store: DeltaStore, specs: Iterable[TableSpec], retention_hours: int | None = None,
             before_vacuum: Callable[[], Any] | None = None) -> dict[str, dict[str, int]]:
    """Routine upkeep of every existing table: compact small files (``optimize``), then (after
    ``before_vacuum``, e.g. re-pointing readers at the compacted versions) delete the files no
    version within the retention needs (``vacuum``); live file counts before and after."""
    present = [spec for spec in specs if store.exists(spec)]
    out: dict[str, dict[str, int]] = {}
    for spec in present:
        before = len(store.file_uris(spec))
        store.optimize(spec)
        out[spec.name] = {"files_before": before, "files_after": len(store.file_uris(spec))}
    if before_vacuum is not None:
        before_vacuum()
    for spec in present:
        out[spec.name]["vacuumed"] = store.vacuum(spec, retention_hours)
    return out


def open_store(spark: SparkSession, config: Config) -> DeltaStore:
    """The store config asks for; ``auto`` picks spark-delta when the Delta classes are loaded."""
    engine = config.lakehouse.engine
    if engine == "auto":
        engine = "spark-delta" if delta_classes_available(spark) else "delta-rs"
    if engine == "spark-delta":
        if not delta_classes_available(spark):
            raise ValueError(
                "lakehouse.engine is spark-delta but the Delta Lake classes are not on the classpath; run with "
                "`spark-submit --packages io.delta:delta-spark_2.12:3.3.2` (plus the Delta SQL extension "
                "confs) or on Databricks, or set lakehouse.engine=delta-rs"
            )
        return SparkDeltaStore(spark, config)
    return DeltaRsStore(spark, config)
