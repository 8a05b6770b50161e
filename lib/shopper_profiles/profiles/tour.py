"""Small pandas views of the profile tables for the tour notebook (one profile snapshot at a time:
sized for exploration, not for the whole population at scale -- use the SQL views for that)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from shopper_profiles.profiles.audiences import AUDIENCE_SIZES
from shopper_profiles.profiles.explanations import EXPLANATIONS
from shopper_profiles.profiles.scoring import PROFILES
from shopper_profiles.storage import DeltaStore


def latest_as_of(store: DeltaStore) -> date:
    if not store.exists(PROFILES):
        raise ValueError("no profiles yet; run `make run` (or jobs/score_profiles.py) first")
    found = store.read(PROFILES).agg(F.max("as_of")).collect()[0][0]
    if found is None:
        raise ValueError("the profile table is empty; run jobs/score_profiles.py first")
    return found


def profiles_frame(store: DeltaStore, as_of: date, sample: int = 5000) -> pd.DataFrame:
    """Up to ``sample`` profiles of one snapshot (a fixed pseudonym order: the same rows each run)."""
    frame = store.read(PROFILES).where(F.col("as_of") == F.lit(as_of)).orderBy("user_id").limit(sample)
    return frame.select("user_id", "top_interest", "purchase_intent", "churn_risk", "price_sensitivity_band",
                        "user_embedding").toPandas()


def interest_distribution(profiles: pd.DataFrame) -> pd.Series:
    return profiles["top_interest"].value_counts().sort_index()


def segment_sizes(store: DeltaStore, as_of: date) -> pd.Series:
    """Audience sizes of the latest run for ``as_of``."""
    if not store.exists(AUDIENCE_SIZES):
        return pd.Series(dtype="int64")
    sizes: pd.DataFrame = store.read(AUDIENCE_SIZES).where(F.col("as_of") == F.lit(as_of)).toPandas()
    if sizes.empty:
        return pd.Series(dtype="int64")
    latest = sizes[sizes["run_at"] == sizes["run_at"].max()]
    return latest.set_index("audience")["users"].sort_index()


def embedding_projection(profiles: pd.DataFrame) -> pd.DataFrame:
    """The user embeddings on their first two principal components."""
    from sklearn.decomposition import PCA

    matrix = np.stack(profiles["user_embedding"].to_numpy())
    points = PCA(n_components=2, random_state=0).fit_transform(matrix)
    return pd.DataFrame({"pc1": points[:, 0], "pc2": points[:, 1], "top_interest": profiles["top_interest"].to_numpy()})


def user_explanation(store: DeltaStore, as_of: date, user_id: str) -> pd.DataFrame:
    """One shopper's explanation rows, best first per target."""
    rows = store.read(EXPLANATIONS).where((F.col("as_of") == F.lit(as_of)) & (F.col("user_id") == user_id))
    return rows.select("target", "target_label", "target_score", "kind", "rank", "attribution", "event_ts", "action",
                       "item_id", "feature", "feature_value").orderBy("target", "kind", "rank").toPandas()
