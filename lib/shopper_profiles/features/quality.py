"""Data quality on write: per-table expectations checked in one pass *before* a commit, and
summary statistics per feature recorded for each snapshot (drift can be plotted later)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopper_profiles.storage import TableSpec

NUMERIC = (T.IntegerType, T.LongType, T.DoubleType, T.FloatType, T.ShortType)
UPPER_BOUNDS = {"purchase_intent_rule": 1.0, "churn_risk_rule": 1.0, "discount_share_90d": 1.0,
                "r_score": 5.0, "f_score": 5.0, "m_score": 5.0}


class DataQualityError(RuntimeError):
    """A feature table broke an expectation; nothing of the snapshot was committed."""


@dataclass(frozen=True)
class Expectation:
    name: str
    failing: Column  # true on a row that breaks it


def expectations(spec: TableSpec, max_sequence: int | None = None) -> list[Expectation]:
    checks = [Expectation(f"{k} is not null", F.col(k).isNull()) for k in spec.keys]
    for field in spec.schema.fields:
        if isinstance(field.dataType, NUMERIC):
            value = F.col(field.name)
            checks.append(Expectation(f"{field.name} >= 0", value < 0))
            if isinstance(field.dataType, T.DoubleType):
                checks.append(Expectation(f"{field.name} is not NaN", F.isnan(value)))
            if field.name in UPPER_BOUNDS:
                checks.append(Expectation(f"{field.name} <= {UPPER_BOUNDS[field.name]}", value > UPPER_BOUNDS[field.name]))
    if max_sequence is not None and "sequence_length" in spec.schema.fieldNames():
        checks.append(Expectation(f"1 <= sequence_length <= {max_sequence}",
                                  (F.col("sequence_length") < 1) | (F.col("sequence_length") > max_sequence)))
    return checks


def check_table(frame: DataFrame, spec: TableSpec, expected_rows: int, max_sequence: int | None = None) -> dict[str, Any]:
    """Evaluate every expectation plus key uniqueness and the row count in one aggregation."""
    checks = expectations(spec, max_sequence)
    key = F.struct(*[F.col(k) for k in spec.keys])
    row = frame.agg(
        F.count(F.lit(1)).alias("_rows"), F.countDistinct(key).alias("_keys"),
        *[F.sum(F.when(c.failing, 1).otherwise(0)).alias(f"_c{i}") for i, c in enumerate(checks)],
    ).first()
    assert row is not None
    failures = [f"{c.name}: {row[f'_c{i}']} rows" for i, c in enumerate(checks) if row[f"_c{i}"]]
    if row["_rows"] != row["_keys"]:
        failures.append(f"keys {list(spec.keys)} are not unique: {row['_rows']} rows, {row['_keys']} distinct")
    if row["_rows"] != expected_rows:
        failures.append(f"row count {row['_rows']} != {expected_rows} active users")
    return {"table": spec.name, "rows": int(row["_rows"]), "failures": failures}


def raise_on_failures(results: list[dict[str, Any]], as_of: date) -> None:
    failed = [r for r in results if r["failures"]]
    if failed:
        lines = [f"  {r['table']}: " + "; ".join(r["failures"]) for r in failed]
        raise DataQualityError(
            f"snapshot {as_of}: data-quality expectations failed, nothing was committed:\n" + "\n".join(lines)
            + "\nFix the upstream data or the transform, then rerun the same --as-of (it is idempotent)."
        )


def feature_summary(frame: DataFrame, spec: TableSpec, as_of: date) -> list[tuple]:
    """(table, snapshot, feature, rows, nulls, mean, stddev, min, p50, max) per numeric/boolean
    feature, and per map/array feature on its size."""
    columns: dict[str, Column] = {}
    for field in spec.schema.fields:
        if field.name in spec.keys:
            continue
        if isinstance(field.dataType, (*NUMERIC, T.BooleanType)):
            columns[field.name] = F.col(field.name).cast("double")
        elif isinstance(field.dataType, T.MapType | T.ArrayType):
            columns[f"size({field.name})"] = F.when(F.col(field.name).isNotNull(), F.size(field.name)).cast("double")
    aggs = [F.count(F.lit(1)).alias("_rows")]
    for i, value in enumerate(columns.values()):
        aggs += [F.count(value).alias(f"n{i}"), F.avg(value).alias(f"mean{i}"), F.stddev(value).alias(f"sd{i}"),
                 F.min(value).alias(f"min{i}"), F.percentile_approx(value, 0.5, 10000).alias(f"p50_{i}"),
                 F.max(value).alias(f"max{i}")]
    row = frame.agg(*aggs).first()
    assert row is not None
    rows = int(row["_rows"])
    return [
        (spec.name, as_of, name, rows, rows - int(row[f"n{i}"]), row[f"mean{i}"], row[f"sd{i}"], row[f"min{i}"],
         None if row[f"p50_{i}"] is None else float(row[f"p50_{i}"]), row[f"max{i}"])
        for i, name in enumerate(columns)
    ]
