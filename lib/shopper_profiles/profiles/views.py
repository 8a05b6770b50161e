"""Analyst access: SQL views over the profile tables, written once in the SQL that DuckDB, Spark SQL
and Databricks SQL share, and registered by :func:`register_duckdb` (``make sql``) or
:func:`register_spark`.

Row views expose pseudonymous ids only (no table under ``restricted/`` is ever registered, and no
demographic prediction is selected). Aggregate views suppress every group with fewer than
``analyst.min_group_size`` shoppers (k-anonymity for counts and means).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shopper_profiles.storage import DeltaStore, TableSpec

CHURN_BAND = "CASE WHEN churn_risk >= 0.5 THEN 'high' ELSE 'low' END"


@dataclass(frozen=True)
class AnalystView:
    name: str
    sql: str
    aggregate: bool  # aggregate views carry a `users` column that is never below k
    description: str


def analyst_tables() -> dict[str, TableSpec]:
    """What analysts may query: profiles and what is derived from them (pseudonymous ids only)."""
    from shopper_profiles.model.evaluation import EVALUATION
    from shopper_profiles.profiles.audiences import AUDIENCE_MEMBERS, AUDIENCE_SIZES
    from shopper_profiles.profiles.demand import CATEGORY_DEMAND
    from shopper_profiles.profiles.explanations import EXPLANATIONS
    from shopper_profiles.profiles.scoring import PROFILES
    from shopper_profiles.profiles.similar import SIMILAR_USERS

    return {spec.name: spec for spec in (PROFILES, EXPLANATIONS, AUDIENCE_MEMBERS, AUDIENCE_SIZES, SIMILAR_USERS,
                                         CATEGORY_DEMAND, EVALUATION)}


def analyst_views(k: int) -> list[AnalystView]:
    if k < 1:
        raise ValueError(f"analyst.min_group_size must be >= 1, got {k}")
    latest = "(SELECT max(as_of) FROM profiles)"
    return [
        AnalystView("profiles_latest", f"""
            SELECT user_id, as_of, top_interest, top_interests, purchase_intent, price_sensitivity_band, churn_risk,
                   recommended_items, model_version
            FROM profiles WHERE as_of = {latest}""", False,
                    "the newest profile of every shopper (pseudonymous id, no demographic predictions)"),
        AnalystView("interest_summary", f"""
            SELECT as_of, top_interest, count(*) AS users, avg(purchase_intent) AS avg_purchase_intent,
                   avg(churn_risk) AS avg_churn_risk
            FROM profiles GROUP BY as_of, top_interest HAVING count(*) >= {k}""", True,
                    "shoppers per top interest and snapshot, with mean intent and churn risk"),
        AnalystView("segment_summary", f"""
            SELECT as_of, top_interest, price_sensitivity_band, {CHURN_BAND} AS churn_band, count(*) AS users,
                   avg(purchase_intent) AS avg_purchase_intent
            FROM profiles GROUP BY as_of, top_interest, price_sensitivity_band, {CHURN_BAND}
            HAVING count(*) >= {k}""", True,
                    "top interest x price sensitivity x churn band"),
        AnalystView("intent_by_churn", f"""
            SELECT as_of, {CHURN_BAND} AS churn_band, price_sensitivity_band, count(*) AS users,
                   avg(purchase_intent) AS avg_purchase_intent, avg(churn_risk) AS avg_churn_risk
            FROM profiles GROUP BY as_of, {CHURN_BAND}, price_sensitivity_band HAVING count(*) >= {k}""", True,
                    "purchase intent against churn risk, by price sensitivity"),
        AnalystView("audience_summary", f"""
            SELECT as_of, audience, count(DISTINCT user_id) AS users
            FROM audience_members GROUP BY as_of, audience HAVING count(DISTINCT user_id) >= {k}""", True,
                    "members per audience and snapshot"),
    ]


def register_duckdb(store: DeltaStore, k: int, connection: object | None = None) -> object:
    """A DuckDB connection with every analyst table (Delta via delta-rs, offline) and view."""
    import duckdb

    con = connection or duckdb.connect()
    for name, spec in analyst_tables().items():
        if store.exists(spec):
            dataset = store.arrow_dataset(spec)
            con.register(f"{name}_delta", dataset)  # type: ignore[attr-defined]
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {name}_delta")  # type: ignore[attr-defined]
    present = _present(con)
    for view in analyst_views(k):
        if _sources(view) <= present:
            con.execute(f"CREATE OR REPLACE VIEW {view.name} AS {view.sql}")  # type: ignore[attr-defined]
    return con


def register_spark(spark: object, store: DeltaStore, k: int) -> list[str]:
    """The same tables and views as Spark temp views (Databricks: point them at the catalog tables)."""
    registered = []
    for name, spec in analyst_tables().items():
        if store.exists(spec):
            store.read(spec).createOrReplaceTempView(name)
            registered.append(name)
    for view in analyst_views(k):
        if _sources(view) <= set(registered):
            spark.sql(f"CREATE OR REPLACE TEMP VIEW {view.name} AS {view.sql}")  # type: ignore[attr-defined]
            registered.append(view.name)
    return registered


def _sources(view: AnalystView) -> set[str]:
    return {name for name in ("profiles", "audience_members") if f"FROM {name}" in view.sql}


def _present(con: object) -> set[str]:
    rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()  # type: ignore[attr-defined]
    return {r[0] for r in rows}


def describe(k: int) -> Mapping[str, str]:
    return {v.name: v.description for v in analyst_views(k)}
