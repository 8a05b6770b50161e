"""Every Delta table the pipeline writes, in one list: for upkeep (optimize + vacuum) and for
checks that must see them all (erasure's coverage test walks the modules for the same specs)."""

from __future__ import annotations

from pyspark.sql import SparkSession

from shopper_profiles.config import Config
from shopper_profiles.storage import DeltaStore, TableSpec, maintain


def all_tables(config: Config) -> list[TableSpec]:
    from shopper_profiles.features.schemas import FEATURE_SNAPSHOTS, feature_specs, stats_spec
    from shopper_profiles.ingest.bronze import INGEST_TABLES
    from shopper_profiles.model.dataset import VOCAB, training_spec
    from shopper_profiles.model.evaluation import EVALUATION
    from shopper_profiles.profiles.audiences import AUDIENCE_MEMBERS, AUDIENCE_SIZES
    from shopper_profiles.profiles.demand import CATEGORY_DEMAND
    from shopper_profiles.profiles.explanations import EXPLANATIONS
    from shopper_profiles.profiles.scoring import PROFILES
    from shopper_profiles.profiles.similar import SIMILAR_USERS

    return [*INGEST_TABLES, *feature_specs(config.features).values(), stats_spec(), FEATURE_SNAPSHOTS, VOCAB,
            training_spec(config.model.max_len), EVALUATION,
            PROFILES, EXPLANATIONS, AUDIENCE_MEMBERS, AUDIENCE_SIZES, SIMILAR_USERS, CATEGORY_DEMAND]


def writer_of(table: str, config: Config) -> str | None:
    """The job that writes ``table`` (by its logical name): what a "table not found" error tells the
    user to run first."""
    from shopper_profiles.features.schemas import FEATURE_SNAPSHOTS, feature_specs, stats_spec
    from shopper_profiles.ingest.bronze import INGEST_TABLES
    from shopper_profiles.model.dataset import VOCAB, training_spec
    from shopper_profiles.model.evaluation import EVALUATION
    from shopper_profiles.profiles.audiences import AUDIENCE_MEMBERS, AUDIENCE_SIZES
    from shopper_profiles.profiles.demand import CATEGORY_DEMAND
    from shopper_profiles.profiles.explanations import EXPLANATIONS
    from shopper_profiles.profiles.scoring import PROFILES
    from shopper_profiles.profiles.similar import SIMILAR_USERS

    writers = {
        "jobs/ingest_events.py --source <source>": [s.name for s in INGEST_TABLES],
        "jobs/build_features.py --as-of <D>": [s.name for s in feature_specs(config.features).values()]
        + [stats_spec().name, FEATURE_SNAPSHOTS.name],
        "jobs/build_training_set.py --as-of <T>": [VOCAB.name, training_spec(config.model.max_len).name],
        "jobs/evaluate_profile_model.py --as-of <E>": [EVALUATION.name],
        "jobs/score_profiles.py --as-of <D>": [PROFILES.name],
        "jobs/explain_profiles.py --as-of <D>": [EXPLANATIONS.name],
        "jobs/build_audiences.py --as-of <D>": [AUDIENCE_MEMBERS.name, AUDIENCE_SIZES.name],
        "jobs/find_similar_users.py --as-of <D>": [SIMILAR_USERS.name],
        "jobs/forecast_demand.py --as-of <D>": [CATEGORY_DEMAND.name],
    }
    return next((job for job, tables in writers.items() if table in tables), None)


def maintain_lakehouse(spark: SparkSession, store: DeltaStore, config: Config,
                       retention_hours: int | None = None) -> dict[str, dict[str, int]]:
    """Weekly upkeep: compact every table, re-point the published feature snapshots at the
    compacted versions (same rows), then vacuum, so the old files may go."""
    from shopper_profiles.features.build import repin_snapshots

    return maintain(store, all_tables(config), retention_hours, before_vacuum=lambda: repin_snapshots(spark, store, config))
