"""The parts of profiles/ that need no trained model: audience definitions, event deletion, exact
neighbour search, and the analyst views' k-suppression on DuckDB and Spark SQL."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from shopper_profiles.config import ConfigError
from shopper_profiles.profiles.audiences import load_audiences
from shopper_profiles.profiles.explanations import remove_events
from shopper_profiles.profiles.scoring import PROFILES
from shopper_profiles.profiles.similar import top_k_neighbours, unit_rows
from shopper_profiles.profiles.views import analyst_views, register_duckdb, register_spark
from shopper_profiles.storage import DeltaStore

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ("beauty", "books", "electronics", "toys")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "audiences.yaml"
    path.write_text(text)
    return path


def test_the_shipped_audiences_validate() -> None:
    audiences = load_audiences(ROOT / "conf" / "audiences.yaml", CATEGORIES + ("fashion", "grocery", "home", "sports"))
    assert len(audiences) >= 2 and all(a.all for a in audiences)


@pytest.mark.parametrize(("body", "message"), [
    ("{field: purchase_intnt, op: '>=', value: 0.5}", r"audience 'a'.*unknown field 'purchase_intnt'"),
    ("{field: purchase_intent, op: '=>', value: 0.5}", r"audience 'a'.*op.*Input should be '>='"),
    ("{field: interest.beuaty, op: '>=', value: 0.5}", r"unknown category 'beuaty' in 'interest.beuaty'"),
    ("{field: top_interests, op: contains, value: garden}", r"unknown category 'garden'"),
    ("{field: purchase_intent, op: '>=', value: high}", r"'purchase_intent' is numeric"),
    ("{field: price_sensitivity_band, op: '>', value: high}", r"'price_sensitivity_band' is text"),
    ("{field: churn_risk, op: '>=', value: 0.5, weight: 2}", r"audience 'a'.*weight.*Extra inputs are not permitted"),
])
def test_a_bad_audience_definition_fails_naming_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, f"audiences:\n  - name: a\n    all:\n      - {body}\n")
    with pytest.raises(ConfigError, match=message):
        load_audiences(path, CATEGORIES)


def test_audience_names_are_unique_and_conditions_required(tmp_path: Path) -> None:
    twice = "audiences:\n" + "  - {name: a, all: [{field: churn_risk, op: '>=', value: 0.5}]}\n" * 2
    with pytest.raises(ConfigError, match="repeated: a"):
        load_audiences(write(tmp_path, twice), CATEGORIES)
    with pytest.raises(ConfigError, match="all"):
        load_audiences(write(tmp_path, "audiences:\n  - {name: a, all: []}\n"), CATEGORIES)


def test_removing_events_repacks_the_sequence_as_if_they_never_happened() -> None:
    arrays = {"item_seq": np.array([[0, 0, 5, 6, 7, 8]]), "type_seq": np.array([[0, 0, 1, 2, 3, 4]]),
              "time_seq": np.array([[0, 0, 9, 8, 7, 6]]), "tabular": np.array([[1.0]])}
    out = remove_events(arrays, [np.array([3, 5])])
    assert out["item_seq"].tolist() == [[0, 0, 0, 0, 5, 7]]
    assert out["type_seq"].tolist() == [[0, 0, 0, 0, 1, 3]]
    assert out["time_seq"].tolist() == [[0, 0, 0, 0, 9, 7]]
    assert arrays["item_seq"].tolist() == [[0, 0, 5, 6, 7, 8]]  # the input is untouched


def test_top_k_neighbours_match_brute_force_across_chunks() -> None:
    rng = np.random.default_rng(4)
    matrix = unit_rows(rng.normal(size=(57, 8)))
    rows = np.arange(10, 30)
    idx, sims = top_k_neighbours(matrix[rows], rows, matrix, k=5, chunk=7)  # 9 chunks
    brute = matrix[rows] @ matrix.T
    brute[np.arange(len(rows)), rows] = -np.inf
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :5]
    assert idx.tolist() == expected.tolist()
    np.testing.assert_allclose(sims, np.take_along_axis(brute, expected, 1), rtol=1e-6)


def _profile(user: int, interest: str, as_of: date = date(2024, 2, 1)) -> tuple:
    values = {"user_id": f"u_{user:04d}", "as_of": as_of, "user_embedding": [0.1, 0.2], "top_interest": interest,
              "top_interests": [{"category": interest, "score": 0.9}], "interest_scores": {interest: 0.9},
              "purchase_intent": 0.7, "expected_price_ratio": 0.8, "price_sensitivity_band": "high", "churn_risk": 0.2,
              "predicted_age_band": "25-34", "predicted_gender": "female", "recommended_items": [],
              "last_event_ts": datetime(2024, 1, 30), "features_as_of": as_of, "model_name": "m", "model_version": "1",
              "feature_versions": {}, "scored_at": datetime(2024, 2, 1)}
    return tuple(values[f] for f in PROFILES.schema.fieldNames())


def test_no_group_below_k_reaches_an_aggregate_view(spark: SparkSession, store: DeltaStore) -> None:
    k = store.config.analyst.min_group_size
    assert k == 10
    rows = ([_profile(i, "toys") for i in range(k - 1)]             # k - 1 shoppers: must never show
            + [_profile(100 + i, "books") for i in range(k)]        # exactly k: shows
            + [_profile(200 + i, "beauty") for i in range(3 * k)])
    store.create(PROFILES)
    store.overwrite(spark.createDataFrame(rows, PROFILES.schema), PROFILES)

    duck = register_duckdb(store, k)
    aggregates = [v for v in analyst_views(k) if v.aggregate and "audience" not in v.name]
    assert aggregates
    for view in aggregates:
        found = duck.sql(f"SELECT * FROM {view.name}").fetchdf()
        assert (found["users"] >= k).all(), view.name
        assert "toys" not in set(found.get("top_interest", [])), view.name
    counts = dict(duck.sql("SELECT top_interest, users FROM interest_summary").fetchall())
    assert counts == {"books": k, "beauty": 3 * k}

    registered = register_spark(spark, store, k)
    assert {v.name for v in aggregates} <= set(registered)
    spark_counts = {r.top_interest: r.users for r in spark.sql("SELECT * FROM interest_summary").collect()}
    assert spark_counts == counts
    latest = duck.sql("SELECT * FROM profiles_latest").fetchdf()
    assert len(latest) == len(rows) and not {"predicted_age_band", "predicted_gender"} & set(latest.columns)
    assert latest["user_id"].str.startswith("u_").all()


def test_a_loaded_model_is_cached_per_tracking_store_not_per_uri_alone(tmp_path: Path) -> None:
    import mlflow
    from shopper_profiles.model.registry import load_model_once

    class Tagged(mlflow.pyfunc.PythonModel):
        def __init__(self, tag: str) -> None:
            self.model = tag

        def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - MLflow's signature
            return model_input

    stores = {}
    for tag in ("shop_a", "shop_b"):  # two lakehouses, each with its own version 1 of the same name
        stores[tag] = f"sqlite:///{tmp_path / tag}.db"
        mlflow.set_tracking_uri(stores[tag])
        experiment = mlflow.create_experiment("profiles", artifact_location=str(tmp_path / tag / "artifacts"))
        with mlflow.start_run(experiment_id=experiment):
            mlflow.pyfunc.log_model(name="m", python_model=Tagged(tag), registered_model_name="shopper_profile_model")
    assert load_model_once(stores["shop_a"], "models:/shopper_profile_model/1") == "shop_a"
    assert load_model_once(stores["shop_b"], "models:/shopper_profile_model/1") == "shop_b"
    assert load_model_once(stores["shop_a"], "models:/shopper_profile_model/1") == "shop_a"


def test_the_demand_backtest_holds_out_whom_the_evaluation_holds_out(spark: SparkSession) -> None:
    """Every shopper outside the validation split when each model behind the profiles trained on
    labels ending by D (a time holdout); the test split when any one saw the window or records no
    training snapshot."""
    from shopper_profiles.model.dataset import split_of
    from shopper_profiles.profiles.demand import held_out

    profiles = spark.range(400).selectExpr("format_string('u%03d', id) AS user_id")
    split = {r.user_id: r.split for r in profiles.select("user_id", split_of(F.col("user_id")).alias("split")).collect()}
    assert set(split.values()) == {"train", "validation", "test"}
    d = date(2024, 4, 16)

    def kept(trained_on: dict) -> tuple[set[str], str]:
        frame, rule = held_out(profiles, trained_on, 14, d)
        return {r.user_id for r in frame.collect()}, rule

    users, rule = kept({"3": date(2024, 4, 2)})  # labels [04-02, 04-16): they end by D
    assert users == {u for u, s in split.items() if s != "validation"} and rule.startswith("time holdout: model version(s) 3")
    test_only = {u for u, s in split.items() if s == "test"}
    for trained_on in ({"3": date(2024, 4, 3)}, {"3": date(2024, 4, 2), "4": date(2024, 4, 16)}, {"3": None}, {}):
        users, rule = kept(trained_on)
        assert users == test_only and rule.startswith("user holdout"), trained_on


def test_demand_sums_each_shoppers_interest_scores_times_their_models_scale(spark: SparkSession) -> None:
    """Forecast = sum over shoppers of score x the scale of the model version that scored them (1
    for a version without one); naive and actual count the shoppers active in each category in the
    window before D and the window from D."""
    from shopper_profiles.profiles.demand import category_demand

    d = date(2024, 4, 16)
    profiles = spark.createDataFrame([
        ("u1", "1", {"beauty": 0.5, "books": 0.2}), ("u2", "2", {"beauty": 0.4, "books": 0.1}),
        ("u3", "1", {"beauty": 0.1, "books": 0.3})], "user_id string, model_version string, interest_scores map<string, double>")
    events = spark.createDataFrame([
        ("u1", datetime(2024, 4, 16, 9), "beauty > skincare"), ("u1", datetime(2024, 4, 20), "beauty > makeup"),
        ("u2", datetime(2024, 4, 29, 23), "books > fiction"), ("u3", datetime(2024, 4, 30), "books > fiction"),  # after the window
        ("u3", datetime(2024, 4, 10), "books > fiction"), ("u9", datetime(2024, 4, 17), "beauty > skincare"),  # u9 not profiled
    ], "user_id string, ts timestamp, category string").withColumn("event_date", F.to_date("ts"))
    rows = {r.category: r for r in category_demand(profiles, events, d, 14, "test_users", True, {"1": 0.8}).collect()}
    assert rows["beauty"].forecast_users == pytest.approx(0.8 * (0.5 + 0.1) + 0.4)
    assert rows["books"].forecast_users == pytest.approx(0.8 * (0.2 + 0.3) + 0.1)
    assert (rows["beauty"].actual_users, rows["books"].actual_users) == (1, 1)
    assert (rows["beauty"].naive_users, rows["books"].naive_users) == (0, 1)
    assert {r.users for r in rows.values()} == {3}
    unscaled = {r.category: r.forecast_users for r in category_demand(profiles, events, d, 14, "all", False).collect()}
    assert unscaled["beauty"] == pytest.approx(1.0)
