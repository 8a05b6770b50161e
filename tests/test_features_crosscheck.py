"""Spark's behaviour aggregates equal DuckDB's, computed independently from the Delta table's
Arrow dataset, on a simulated shop ingested end to end."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import ingest_simulator, simulated_lakehouse
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from shopper_profiles.features.build import build_snapshot
from shopper_profiles.features.duckdb_check import behaviour_aggregates
from shopper_profiles.features.schemas import ACTIONS, behaviour_spec
from shopper_profiles.ingest.bronze import EVENTS


@pytest.mark.slow
def test_behaviour_aggregates_match_duckdb(spark: SparkSession, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "crosscheck")
    config, store = simulated_lakehouse(spark, tmp_path, users=400, days=40, items_per_leaf=30)
    ingest_simulator(spark, config, store)
    as_of = date(2024, 2, 5)
    build_snapshot(spark, store, config, as_of)

    windows = config.features.windows_days
    columns = ["user_id"] + [f"{k}_{d}d" for d in windows for k in [*ACTIONS, "spend", "sessions"]]
    spark_rows = {r["user_id"]: r.asDict() for r in store.read(behaviour_spec(config.features))
                  .where(F.col("snapshot_date") == as_of).select(*columns).collect()}
    duck = behaviour_aggregates(store.arrow_dataset(EVENTS), as_of, windows).to_pylist()
    duck_rows = {r["user_id"]: r for r in duck}
    assert len(spark_rows) > 300 and set(spark_rows) == set(duck_rows)
    mismatches = []
    for user, row in spark_rows.items():
        for column in columns[1:]:
            a, b = row[column], duck_rows[user][column]
            same = abs(a - b) <= 0.011 if column.startswith("spend") else a == b
            if not same:
                mismatches.append((user, column, a, b))
    assert not mismatches, mismatches[:10]
    total_views = sum(r["views_90d"] for r in spark_rows.values())
    assert total_views > 10_000
