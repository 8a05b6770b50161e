"""Storage contract: the same exact expectations for every engine.

Runs against delta-rs by default; `pytest --storage-engine spark-delta` runs the same
tests against native Delta Lake where its jars can be had (not on this machine).
"""

from __future__ import annotations

from datetime import date

import pytest
from conftest import assert_rows_equal
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from shopper_profiles.storage import DeltaStore, SchemaMismatchError, TableNotFoundError, TableSpec

SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("snapshot_date", T.DateType(), False),
        T.StructField("views", T.LongType(), True),
        T.StructField("spend", T.DoubleType(), True),
    ]
)
# The smoke table's path key is reused so the spec resolves through config like real tables.
SPEC = TableSpec("smoke", SCHEMA, partition_by=("snapshot_date",), keys=("user_id", "snapshot_date"))
UNPARTITIONED = TableSpec("smoke", SCHEMA, keys=("user_id", "snapshot_date"))

D1, D2, D3 = date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)


def frame(spark: SparkSession, rows: list[tuple]):
    return spark.createDataFrame(rows, SCHEMA)


def test_create_is_empty_with_declared_schema(store: DeltaStore) -> None:
    assert store.create(SPEC) is True
    assert store.create(SPEC) is False  # idempotent
    table = store.read(SPEC)
    assert table.count() == 0
    assert [(f.name, f.dataType) for f in table.schema.fields] == [(f.name, f.dataType) for f in SCHEMA.fields]
    assert store.version(SPEC) == 0


def test_read_before_create_names_the_table(store: DeltaStore) -> None:
    with pytest.raises(TableNotFoundError, match="table smoke does not exist"):
        store.read(SPEC)


def test_append_then_read_exact_rows(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    v1 = store.append(frame(spark, [("u1", D1, 3, 10.0), ("u2", D1, 1, None)]), SPEC)
    v2 = store.append(frame(spark, [("u1", D2, 5, 2.5)]), SPEC)
    assert (v1, v2) == (1, 2)
    assert_rows_equal(store.read(SPEC), [("u1", D1, 3, 10.0), ("u2", D1, 1, None), ("u1", D2, 5, 2.5)])


def test_read_as_of_version(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 3, 10.0)]), SPEC)
    store.append(frame(spark, [("u2", D2, 4, 1.0)]), SPEC)
    assert_rows_equal(store.read(SPEC, version=1), [("u1", D1, 3, 10.0)])
    assert_rows_equal(store.read(SPEC, version=0), [])
    assert store.read(SPEC).count() == 2


def test_full_overwrite_replaces_everything(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 3, 10.0), ("u2", D2, 1, 1.0)]), SPEC)
    store.overwrite(frame(spark, [("u9", D3, 9, 9.0)]), SPEC)
    assert_rows_equal(store.read(SPEC), [("u9", D3, 9, 9.0)])


def test_window_overwrite_leaves_other_windows_intact(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(
        frame(spark, [("u1", D1, 1, 1.0), ("u2", D1, 2, 2.0), ("u1", D2, 3, 3.0), ("u1", D3, 4, 4.0)]), SPEC
    )
    store.overwrite(frame(spark, [("u7", D2, 70, 7.0), ("u8", D2, 80, 8.0)]), SPEC, window={"snapshot_date": D2})
    assert_rows_equal(
        store.read(SPEC),
        [("u1", D1, 1, 1.0), ("u2", D1, 2, 2.0), ("u7", D2, 70, 7.0), ("u8", D2, 80, 8.0), ("u1", D3, 4, 4.0)],
    )
    # Rerunning the same window is idempotent.
    store.overwrite(frame(spark, [("u7", D2, 70, 7.0), ("u8", D2, 80, 8.0)]), SPEC, window={"snapshot_date": D2})
    assert store.read(SPEC).count() == 5


def test_window_overwrite_of_several_dates_and_empty_window(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 1, 1.0), ("u1", D2, 2, 2.0), ("u1", D3, 3, 3.0)]), SPEC)
    store.overwrite(frame(spark, [("u5", D1, 5, 5.0)]), SPEC, window={"snapshot_date": [D1, D2]})
    assert_rows_equal(store.read(SPEC), [("u5", D1, 5, 5.0), ("u1", D3, 3, 3.0)])
    # Overwriting a window with no rows empties just that window.
    store.overwrite(frame(spark, []), SPEC, window={"snapshot_date": [D3]})
    assert_rows_equal(store.read(SPEC), [("u5", D1, 5, 5.0)])


def test_window_overwrite_rejects_rows_outside_the_window(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 1, 1.0)]), SPEC)
    with pytest.raises(Exception, match="(?i)window|replaceWhere|does not conform"):
        store.overwrite(frame(spark, [("u2", D2, 2, 2.0)]), SPEC, window={"snapshot_date": D1})
    assert_rows_equal(store.read(SPEC), [("u1", D1, 1, 1.0)])
    assert store.version(SPEC) == 1


def test_merge_updates_matches_and_inserts_the_rest(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 1, 1.0), ("u2", D1, 2, 2.0), ("u3", D1, 3, 3.0)]), SPEC)
    result = store.merge(frame(spark, [("u2", D1, 20, 20.0), ("u4", D1, 4, 4.0), ("u1", D2, 10, 10.0)]), SPEC)
    assert (result.updated, result.inserted) == (1, 2)
    table = store.read(SPEC)
    assert table.count() == 5  # read-after-merge: removed files must not be read back
    assert_rows_equal(
        table,
        [("u1", D1, 1, 1.0), ("u2", D1, 20, 20.0), ("u3", D1, 3, 3.0), ("u4", D1, 4, 4.0), ("u1", D2, 10, 10.0)],
    )
    # The same merge again changes values of nothing and inserts nothing.
    again = store.merge(frame(spark, [("u2", D1, 20, 20.0), ("u4", D1, 4, 4.0), ("u1", D2, 10, 10.0)]), SPEC)
    assert again.inserted == 0
    assert store.read(SPEC).count() == 5


def test_merge_rejects_duplicate_source_keys(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    with pytest.raises(ValueError, match="duplicate keys"):
        store.merge(frame(spark, [("u1", D1, 1, 1.0), ("u1", D1, 2, 2.0)]), SPEC)


def test_delete_where(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 1, 1.0), ("u2", D1, 2, 2.0), ("u1", D2, 3, 3.0)]), SPEC)
    deleted = store.delete(SPEC, "user_id = 'u1'")
    assert deleted == 2
    assert_rows_equal(store.read(SPEC), [("u2", D1, 2, 2.0)])


def test_rewrite_without_touches_only_partitions_that_lose_rows(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 1, 1.0), ("u2", D1, 2, 2.0)]), SPEC)
    store.append(frame(spark, [("u2", D2, 3, 3.0)]), SPEC)
    store.append(frame(spark, [("u1", D3, 4, 4.0)]), SPEC)
    untouched = {f for f in store.file_uris(SPEC) if "2024-01-02" in f}
    gone = spark.createDataFrame([("u1",)], "user_id string")
    removed = store.rewrite_without(SPEC, lambda table: table.join(gone, "user_id", "left_anti"))
    assert removed == 2 and store.version(SPEC) == 4  # one commit for both partitions
    assert_rows_equal(store.read(SPEC), [("u2", D1, 2, 2.0), ("u2", D2, 3, 3.0)])
    assert untouched <= set(store.file_uris(SPEC))
    assert store.rewrite_without(SPEC, lambda table: table.join(gone, "user_id", "left_anti")) == 0
    assert store.version(SPEC) == 4  # nothing to remove: no commit


def test_purge_history_leaves_no_trace_of_removed_rows(spark: SparkSession, store: DeltaStore, config) -> None:
    import pathlib

    store.create(SPEC)
    for i in range(3):
        store.append(frame(spark, [(f"u_erased{i}", D1, i, 1.0), (f"u_kept{i}", D2, i, 2.0)]), SPEC)
    gone = spark.createDataFrame([(f"u_erased{i}",) for i in range(3)], "user_id string")
    assert store.rewrite_without(SPEC, lambda table: table.join(gone, "user_id", "left_anti")) == 3
    store.vacuum(SPEC, retention_hours=0)
    root = pathlib.Path(store.path(SPEC))
    logged = lambda: [p.name for p in root.rglob("*") if p.is_file() and b"u_erased" in p.read_bytes()]  # noqa: E731
    assert logged(), "before the purge, the commit log still holds the removed rows' statistics"
    store.purge_history(SPEC)
    assert logged() == []
    assert store.read(SPEC).count() == 3
    store.append(frame(spark, [("u_new", D3, 1, 1.0)]), SPEC)  # the table goes on
    assert store.read(SPEC).count() == 4


def test_failed_write_leaves_previous_version_readable(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 1, 1.0)]), SPEC)

    @F.udf(T.LongType())
    def explode_on_u3(user_id: str, views: int) -> int:
        if user_id == "u3":
            raise RuntimeError("simulated executor failure mid-write")
        return views

    rows = [(f"u{i % 5}", D2, i, float(i)) for i in range(200)]
    failing = frame(spark, rows).repartition(4).withColumn("views", explode_on_u3("user_id", "views"))
    with pytest.raises(Exception, match="simulated executor failure"):
        store.append(failing, SPEC)
    assert store.version(SPEC) == 1
    assert_rows_equal(store.read(SPEC), [("u1", D1, 1, 1.0)])
    # And the table still takes writes afterwards.
    store.append(frame(spark, [("u2", D2, 2, 2.0)]), SPEC)
    assert store.read(SPEC).count() == 2


@pytest.mark.parametrize("fail_at", ["second file moved", "commit"])
def test_a_write_that_fails_after_moving_files_removes_them(spark: SparkSession, store: DeltaStore, monkeypatch,
                                                            fail_at: str) -> None:
    """delta-rs engine: files move into the table before the commit; a failure after any move
    (half-way through the moves, or at the commit) must leave no file the log does not reference."""
    import pathlib

    from shopper_profiles import storage

    if store.engine != "delta-rs":
        pytest.skip("the staged-file move is the delta-rs engine's")
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 1, 1.0)]), SPEC)
    real_metadata, seen = storage.pq.read_metadata, []

    def metadata_then_fail(path: str, *args, **kwargs):
        seen.append(path)
        if fail_at == "second file moved" and len(seen) == 2:
            raise OSError("injected: disk gone after the first file moved")
        return real_metadata(path, *args, **kwargs)

    def refuse_commit(*args, **kwargs):
        raise RuntimeError("injected: commit failed after every file moved")

    monkeypatch.setattr(storage.pq, "read_metadata", metadata_then_fail)
    if fail_at == "commit":
        monkeypatch.setattr(storage, "_check_window", refuse_commit)
    rows = frame(spark, [(f"u{i}", D2 if i % 2 else D3, i, float(i)) for i in range(40)]).repartition(4)
    with pytest.raises((OSError, RuntimeError), match="injected"):
        store.overwrite(rows, SPEC, window={"snapshot_date": [D2, D3]})
    assert len(seen) >= 2
    on_disk = {p.name for p in pathlib.Path(store.path(SPEC)).rglob("*.parquet") if "_delta_log" not in p.parts}
    assert on_disk == {u.rsplit("/", 1)[-1] for u in store.file_uris(SPEC)}
    assert store.version(SPEC) == 1 and store.read(SPEC).count() == 1


def test_schema_mismatch_names_the_column(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    wrong_type = frame(spark, [("u1", D1, 1, 1.0)]).withColumn("views", F.col("views").cast("string"))
    with pytest.raises(SchemaMismatchError, match="column 'views' is string in the frame but bigint"):
        store.append(wrong_type, SPEC)
    missing = frame(spark, [("u1", D1, 1, 1.0)]).drop("spend")
    with pytest.raises(SchemaMismatchError, match=r"lacks column\(s\) \['spend'\]"):
        store.append(missing, SPEC)
    extra = frame(spark, [("u1", D1, 1, 1.0)]).withColumn("clicks", F.lit(1).cast("long"))
    with pytest.raises(SchemaMismatchError, match=r"\['clicks'\] are not in the table"):
        store.append(extra, SPEC)
    assert store.version(SPEC) == 0


def test_additive_schema_evolution_only_when_asked(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 1, 1.0)]), SPEC)
    extra = frame(spark, [("u2", D2, 2, 2.0)]).withColumn("clicks", F.lit(7).cast("long"))
    store.append(extra, SPEC, evolve=True)
    table = store.read(SPEC)
    assert table.columns == ["user_id", "snapshot_date", "views", "spend", "clicks"]
    assert_rows_equal(table, [("u1", D1, 1, 1.0, None), ("u2", D2, 2, 2.0, 7)])
    # Columns are matched by name, whatever their order in the frame.
    reordered = frame(spark, [("u3", D3, 3, 3.0)]).withColumn("clicks", F.lit(None).cast("long"))
    store.append(reordered.select("clicks", "spend", "views", "snapshot_date", "user_id"), SPEC)
    assert store.read(SPEC).count() == 3


def test_history_optimize_and_vacuum(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    for i in range(4):
        store.append(frame(spark, [(f"u{i}", D1, i, float(i))]), SPEC)
    store.overwrite(frame(spark, [("u9", D2, 9, 9.0)]), SPEC, window={"snapshot_date": D2})
    history = store.history(SPEC)
    assert [h["version"] for h in history] == [5, 4, 3, 2, 1, 0]
    files_before = len(store.file_uris(SPEC))
    assert files_before >= 5
    metrics = store.optimize(SPEC)
    assert metrics  # engine-specific metrics, non-empty
    assert len(store.file_uris(SPEC)) < files_before
    assert store.read(SPEC).count() == 5
    removed = store.vacuum(SPEC, retention_hours=0)
    assert removed >= 4
    assert store.read(SPEC).count() == 5
    with pytest.raises(Exception):  # noqa: B017 - each engine raises its own error for vacuumed files
        store.read(SPEC, version=1).collect()


def test_maintain_compacts_and_vacuums_keeping_every_row(spark: SparkSession, store: DeltaStore) -> None:
    from shopper_profiles.storage import maintain

    store.create(SPEC)
    for i in range(6):
        store.append(frame(spark, [(f"u{i}", D1, i, float(i))]), SPEC)
    report = maintain(store, [SPEC, UNPARTITIONED.__class__("erasures", SCHEMA)], retention_hours=0)
    assert list(report) == ["smoke"]  # tables that do not exist are skipped
    assert report["smoke"]["files_before"] >= 6 and report["smoke"]["files_after"] == 1 and report["smoke"]["vacuumed"] >= 6
    assert store.read(SPEC).count() == 6


def test_unpartitioned_table_round_trip(spark: SparkSession, store: DeltaStore) -> None:
    store.create(UNPARTITIONED)
    store.append(frame(spark, [("u1", D1, 1, 1.0), ("u2", D2, 2, None)]), UNPARTITIONED)
    result = store.merge(frame(spark, [("u2", D2, 5, 5.0)]), UNPARTITIONED)
    assert (result.updated, result.inserted) == (1, 0)
    assert_rows_equal(store.read(UNPARTITIONED), [("u1", D1, 1, 1.0), ("u2", D2, 5, 5.0)])
    if store.engine == "delta-rs":  # native Delta allows replaceWhere on any column
        with pytest.raises(ValueError, match="needs partition columns"):
            store.overwrite(frame(spark, []), UNPARTITIONED, window={"snapshot_date": D1})


def test_string_partition_values_with_special_characters(spark: SparkSession, store: DeltaStore) -> None:
    schema = T.StructType([T.StructField("country", T.StringType()), T.StructField("n", T.LongType())])
    spec = TableSpec("smoke", schema, partition_by=("country",))
    store.create(spec)
    rows = [("United Kingdom", 1), ("Côte d'Ivoire", 2), ("a/b=c", 3), (None, 4)]
    store.append(spark.createDataFrame(rows, schema), spec)
    assert_rows_equal(store.read(spec), rows)
    store.overwrite(spark.createDataFrame([("United Kingdom", 10)], schema), spec, window={"country": "United Kingdom"})
    assert_rows_equal(store.read(spec), [("United Kingdom", 10), ("Côte d'Ivoire", 2), ("a/b=c", 3), (None, 4)])


def test_merge_of_an_empty_source_changes_nothing(spark: SparkSession, store: DeltaStore) -> None:
    store.create(SPEC)
    store.append(frame(spark, [("u1", D1, 1, 1.0)]), SPEC)
    result = store.merge(frame(spark, []), SPEC)
    assert (result.inserted, result.updated) == (0, 0)
    assert_rows_equal(store.read(SPEC), [("u1", D1, 1, 1.0)])
