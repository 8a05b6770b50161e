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
    """The same query for DuckDB and Spark SQL (both sessions in UTC). Two aggregations, as the
    feature build does: per shopper and session (action counts and spend per window, the session's
    last event), then per shopper, where a session counts in a window when its last event is inside.
    One ``COUNT(DISTINCT session_id)`` per window instead made Spark expand every event into one row
    per distinct aggregate plus one (an ``Expand`` of 4x the events, then two shuffles)."""
    cut = (f"TIMESTAMPTZ '{as_of.isoformat()} 00:00:00+00'" if dialect == "duckdb"
           else f"TIMESTAMP '{as_of.isoformat()} 00:00:00'")
    per_session, per_shopper = [], []
    for days in windows:
        inside = f"ts >= {cut} - INTERVAL {int(days)} DAY"
        for name, action in ACTIONS.items():
            per_session.append(f"SUM(CASE WHEN {inside} AND event_type = '{action}' THEN 1 ELSE 0 END) AS {name}_{days}d")
            per_shopper.append(f"SUM({name}_{days}d) AS {name}_{days}d")
        per_session.append(f"SUM(CASE WHEN {inside} AND event_type = 'purchase' THEN price * quantity END) AS spend_{days}d")
        per_shopper.append(f"ROUND(COALESCE(SUM(spend_{days}d), 0), 2) AS spend_{days}d")
        per_shopper.append(f"SUM(CASE WHEN session_id IS NOT NULL AND last_ts >= {cut} - INTERVAL {int(days)} DAY "
                           f"THEN 1 ELSE 0 END) AS sessions_{days}d")
    sessions = (f"SELECT user_id, session_id, MAX(ts) AS last_ts, {', '.join(per_session)} FROM events "
                f"WHERE event_date <= DATE '{as_of.isoformat()}' AND ts < {cut} GROUP BY user_id, session_id")
    return f"SELECT user_id, {', '.join(per_shopper)} FROM ({sessions}) AS sessions GROUP BY user_id"


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
