"""A registered profile model as the consumers of the registry see it: which version, trained on
which snapshot with which vocabulary, and whether it may be used at a given as-of date.

Evaluation and scoring both go through :meth:`RegisteredModel.check_usable`, so a model that has
seen the future of D, or that would tokenise with another vocabulary, is refused the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from shopper_profiles.config import Config
from shopper_profiles.model.dataset import tabular_width
from shopper_profiles.model.vocabulary import Vocabulary
from shopper_profiles.storage import DeltaStore

CHAMPION = "champion"
_LOADED: dict[tuple[str, str], Any] = {}
TRAINING_SNAPSHOT_TAG = "training_snapshot"
VOCAB_FINGERPRINT_TAG = "vocab_fingerprint"


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str
    training_snapshot: date | None
    vocab_fingerprint: str | None
    spec: dict[str, Any]

    @property
    def uri(self) -> str:
        """The immutable version URI (an alias may move while a job runs)."""
        return f"models:/{self.name}/{self.version}"

    @classmethod
    def resolve(cls, config: Config, alias: str | None = None, version: str | int | None = None) -> RegisteredModel:
        """The registered model by version, or by alias (default ``champion``)."""
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(config.mlflow_tracking_uri)
        client = MlflowClient()
        name = config.mlflow.registered_model
        ref = f"version {version}" if version is not None else f"alias @{alias or CHAMPION}"
        try:
            found = (client.get_model_version(name, str(version)) if version is not None
                     else client.get_model_version_by_alias(name, alias or CHAMPION))
        except Exception as error:  # noqa: BLE001 - MLflow raises several kinds for a missing model
            raise ValueError(f"registered model {name!r} has no {ref} in {config.mlflow_tracking_uri}; "
                             "train one first (jobs/train_profile_model.py) or pick another --model-version") from error
        run = client.get_run(str(found.run_id))
        tags, params = run.data.tags, run.data.params
        snapshot = tags.get(TRAINING_SNAPSHOT_TAG) or params.get("as_of")
        spec: dict[str, Any] = {}
        try:
            path = mlflow.artifacts.download_artifacts(run_id=str(found.run_id), artifact_path="spec.json")
            with open(path) as handle:
                spec = json.load(handle)
        except Exception:  # noqa: BLE001 - older runs logged the spec only inside the model
            spec = {}
        return cls(name=name, version=str(found.version), run_id=str(found.run_id),
                   training_snapshot=date.fromisoformat(snapshot) if snapshot else None,
                   vocab_fingerprint=tags.get(VOCAB_FINGERPRINT_TAG), spec=spec)

    def usable_vocabulary(self, store: DeltaStore, as_of: date) -> Vocabulary:
        """The vocabulary the model was trained with, once :meth:`check_usable` accepts the model for D."""
        vocabulary = None
        if self.training_snapshot is not None and self.training_snapshot <= as_of:
            try:
                vocabulary = Vocabulary.load(store, self.training_snapshot)
            except ValueError:  # gone: check_usable says so with what to do
                vocabulary = None
        self.check_usable(as_of, vocabulary)
        assert vocabulary is not None  # check_usable refuses a missing vocabulary
        return vocabulary

    def check_usable(self, as_of: date, vocabulary: Vocabulary | None) -> None:
        """Refuse, saying why and what to do, a model that cannot honestly serve snapshot ``as_of``."""
        if self.training_snapshot is None or self.vocab_fingerprint is None:
            raise ValueError(f"{self.uri} records no training snapshot or vocabulary (trained by an older release); "
                             "retrain it with jobs/train_profile_model.py")
        if self.training_snapshot > as_of:
            raise ValueError(f"{self.uri} was trained on snapshot {self.training_snapshot}, later than {as_of}: its "
                             f"labels came from after {as_of}, so it would score with knowledge of the future. "
                             f"Use a model trained on a snapshot <= {as_of} (--model-version N) or a later --as-of")
        if vocabulary is None or vocabulary.fingerprint != self.vocab_fingerprint:
            found = "none" if vocabulary is None else f"{vocabulary.fingerprint} ({vocabulary.n_items} tokens)"
            raise ValueError(f"{self.uri} was trained with item vocabulary {self.vocab_fingerprint} of snapshot "
                             f"{self.training_snapshot}, but gold/item_vocab for that snapshot is now {found}: item "
                             "tokens would point at the wrong items. Retrain on the rebuilt training set, or restore "
                             "the vocabulary the model was trained with")
        width = tabular_width(len(vocabulary.categories))
        if int(self.spec.get("n_tabular", width)) != width:
            raise ValueError(f"{self.uri} reads {self.spec['n_tabular']} table values per shopper, but this release builds "
                             f"{width} for {len(vocabulary.categories)} categories (the tables gained the 90-day category "
                             "shares and the shrunk item price level): retrain it with jobs/train_profile_model.py")


def load_model_once(tracking_uri: str, model_uri: str) -> Any:
    """The Keras model behind a registered version, loaded at most once per Python process (Spark
    reuses its Python workers, so scoring loads it once per executor worker, not per batch). Keyed
    by the tracking store too: ``models:/name/1`` of one lakehouse is not version 1 of another."""
    key = (tracking_uri, model_uri)
    if key not in _LOADED:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        _LOADED[key] = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().model
    return _LOADED[key]


def use_experiment(tracking_uri: str, experiment: str) -> None:
    """Point MLflow at the store and the experiment. A new experiment in a local sqlite store keeps
    its artifacts beside the database (``<lakehouse>/mlflow-artifacts``), not in ``./mlruns`` of
    whichever folder the job happens to run in (MLflow's default)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if tracking_uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(experiment) is None:
        database = Path(tracking_uri[len("sqlite:///"):])
        mlflow.create_experiment(experiment, artifact_location=str(database.parent / "mlflow-artifacts"))
    mlflow.set_experiment(experiment)
