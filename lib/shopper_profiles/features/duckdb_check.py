"""The behaviour aggregates again, computed by DuckDB straight from the Delta table's Arrow
dataset: an independent engine to cross-check Spark's numbers (tests) and time them (bench)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from shopper_profiles.features.schemas import ACTIONS


def behaviour_aggregates_sql(as_of: date, windows: Sequence[int], dialect: str = "duckdb") -> str:
    """The same query for DuckDB and Spark SQL (both sessions in UTC)."""
    cut = (f"TIMESTAMPTZ '{as_of.isoformat()} 00:00:00+00'" if dialect == "duckdb"
           else f"TIMESTAMP '{as_of.isoformat()} 00:00:00'")
    columns = []
    for days in windows:
        inside = f"ts >= {cut} - INTERVAL {int(days)} DAY"
        for name, action in ACTIONS.items():
            columns.append(f"SUM(CASE WHEN {inside} AND event_type = '{action}' THEN 1 ELSE 0 END) AS {name}_{days}d")
        columns.append(f"ROUND(COALESCE(SUM(CASE WHEN {inside} AND event_type = 'purchase' THEN price * quantity END), 0), 2)"
                       f" AS spend_{days}d")
        columns.append(f"COUNT(DISTINCT CASE WHEN {inside} THEN session_id END) AS sessions_{days}d")
    return (f"SELECT user_id, {', '.join(columns)} FROM events "
            f"WHERE event_date <= DATE '{as_of.isoformat()}' AND ts < {cut} GROUP BY user_id")


def behaviour_aggregates(events: pads.Dataset, as_of: date, windows: Sequence[int], threads: int | None = None) -> pa.Table:
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        if threads:
            connection.execute(f"SET threads = {int(threads)}")
        connection.register("events", events)
        return connection.execute(behaviour_aggregates_sql(as_of, windows)).arrow()
    finally:
        connection.close()
