"""Every Delta table the pipeline writes, in one list: for upkeep (optimize + vacuum) and for
checks that must see them all (erasure's coverage test walks the modules for the same specs)."""

from __future__ import annotations

from shopper_profiles.config import Config
from shopper_profiles.storage import TableSpec


def all_tables(config: Config) -> list[TableSpec]:
    from shopper_profiles.features.schemas import feature_specs, stats_spec
    from shopper_profiles.ingest.bronze import (
        ERASURES,
        EVENTS,
        INGEST_LOADS,
        ITEMS,
        PLANTED_TRUTH,
        QUARANTINE,
        SOCIAL_EDGES,
        USER_ID_MAP,
        USERS,
    )
    from shopper_profiles.model.dataset import VOCAB, training_spec
    from shopper_profiles.model.evaluation import EVALUATION
    from shopper_profiles.profiles.audiences import AUDIENCE_MEMBERS, AUDIENCE_SIZES
    from shopper_profiles.profiles.demand import CATEGORY_DEMAND
    from shopper_profiles.profiles.explanations import EXPLANATIONS
    from shopper_profiles.profiles.scoring import PROFILES
    from shopper_profiles.profiles.similar import SIMILAR_USERS

    return [EVENTS, USERS, ITEMS, SOCIAL_EDGES, QUARANTINE, INGEST_LOADS, USER_ID_MAP, PLANTED_TRUTH, ERASURES,
            *feature_specs(config.features).values(), stats_spec(), VOCAB, training_spec(config.model.max_len), EVALUATION,
            PROFILES, EXPLANATIONS, AUDIENCE_MEMBERS, AUDIENCE_SIZES, SIMILAR_USERS, CATEGORY_DEMAND]
