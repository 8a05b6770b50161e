"""Typed configuration: conf/base.yaml plus one override file per environment.

Every job takes ``--env`` (local, dev, prod) and any number of
``--conf-override dotted.key=value``; unknown keys or wrong types fail at start-up
with the key named, before any Spark or Delta work starts.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

ENVIRONMENTS = ("local", "dev", "staging", "prod")
def _project_root() -> Path:
    """``SHOPPER_HOME`` when set (a scheduler submits from a folder of its own: Airflow); else the
    checkout when the library runs from one (editable install, ``make run``); from a wheel
    (``spark-submit --py-files``, a cluster library) the current folder, which holds ``conf/``
    when a job is submitted from the checkout (elsewhere SHOPPER_CONF_DIR names it)."""
    if os.environ.get("SHOPPER_HOME"):
        return Path(os.environ["SHOPPER_HOME"]).resolve()
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


PROJECT_ROOT = _project_root()
"""Repository root (the folder holding conf/); relative paths in config resolve against it."""


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LakehouseConfig(_Strict):
    root: str = Field(description="Lakehouse root folder or URI; every table lives below it.")
    engine: Literal["auto", "delta-rs", "spark-delta"] = Field(
        description="Delta engine: delta-rs (embedded: Spark computes, deltalake commits), "
        "spark-delta (native format('delta'), needs the Delta jars), or auto (spark-delta when "
        "the Delta classes are on the classpath, else delta-rs)."
    )
    vacuum_retention_hours: int = Field(ge=0)


class TablesConfig(_Strict):
    """Logical table name -> path relative to the lakehouse root."""

    smoke: str
    events: str
    users: str
    items: str
    social_edges: str
    quarantine: str
    ingest_loads: str
    user_id_map: str
    planted_truth: str
    erasures: str
    features_basic: str
    features_behaviour: str
    features_need: str
    features_social: str
    behaviour_sequences: str
    feature_stats: str
    feature_snapshots: str
    item_vocab: str
    training_set: str
    model_evaluation: str
    profiles: str
    profile_explanations: str
    audience_members: str
    audience_sizes: str
    similar_users: str
    category_demand: str


class DataConfig(_Strict):
    dir: str = Field(description="Folder with the real data sets (../shared/data).")


class MlflowConfig(_Strict):
    tracking_uri: str | None = Field(
        default=None, description="None: sqlite:///<lakehouse root>/mlflow.db"
    )
    experiment: str
    registered_model: str


class SparkConfig(_Strict):
    master: str | None = Field(
        description="Only for local runs; None on a cluster, where the session factory only "
        "calls getOrCreate()."
    )
    app_name: str
    shuffle_partitions: int = Field(ge=1)
    driver_memory: str
    driver_java_options: str = Field(
        default="", description="Only for local runs: extra JVM options of the local driver (its only JVM), e.g. "
        "the garbage collector; on a cluster the cluster's own settings decide.")
    conf: dict[str, str] = Field(default_factory=dict)


class SimulatorConfig(_Strict):
    """The embedded default source: a seeded shopper world with planted truth."""

    seed: int
    users: int = Field(ge=1, description="~122 events per user over the default 120 days: 8,200 users ~ 1 M events")
    items_per_leaf: int = Field(ge=2)
    start_date: date
    days: int = Field(ge=1)
    mean_active_day_rate: float = Field(gt=0, le=1)
    churn_share: float = Field(ge=0, le=1)
    friends_per_user: int = Field(ge=0)
    dirty_rate: float = Field(ge=0, lt=0.5, description="share of events corrupted with one bad-input kind")
    duplicate_rate: float = Field(ge=0, lt=0.5)
    truth_horizon_days: int = Field(ge=1, description="next-window length for will_purchase truth")
    complement_rate: float = Field(default=0.6, ge=0, le=1, description="chance a purchase with a complement "
                                   "(camera -> lens) is followed by a session on the complement within two days")
    replenishment_rate: float = Field(default=0.7, ge=0, le=1, description="chance a consumable is bought again one "
                                      "cycle later (and rate^2 two cycles later); cycles 14-28 days per leaf")
    drift_share: float = Field(default=0.4, ge=0, le=1, description="share of shoppers whose third interest gives way "
                               "to a new one on a day inside the period")
    influence_rate: float = Field(default=0.1, ge=0, le=1, description="chance a friend or follower looks at an item "
                                  "a shopper bought or shared, 20-68 hours later")
    search_return_rate: float = Field(default=0.4, ge=0, le=1, description="chance a search-led session brings the "
                                      "shopper back to its first item 20-68 hours later")


class IngestConfig(_Strict):
    near_duplicate_seconds: int = Field(ge=0)
    future_tolerance_minutes: int = Field(ge=0)
    earliest_plausible: date
    max_price: float = Field(gt=0)
    max_quantity: int = Field(gt=0)
    max_text_length: int = Field(gt=0)
    max_id_length: int = Field(gt=0)
    non_product_codes: list[str]


class FeaturesConfig(_Strict):
    windows_days: list[int] = Field(min_length=1, description="behaviour count windows, e.g. [1, 7, 30, 90]")
    sequence_length: int = Field(ge=1, description="events kept per user in behaviour_sequences")
    affinity_half_life_days: float = Field(gt=0)
    inactive_days: int = Field(ge=1)
    top_terms: int = Field(ge=1)
    top_brands: int = Field(ge=1)


class ModelConfig(_Strict):
    max_len: int = Field(ge=2, description="behaviour tokens per user fed to BERT")
    horizon_days: int = Field(ge=1, description="label window after the snapshot")
    hidden_size: int = Field(ge=8)
    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    seed: int
    text_init: bool = Field(description="initialise item embeddings from MiniLM over titles")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="BERT hidden and attention dropout")
    wide: bool = Field(default=True, description="rule signals (category affinity, repeat counts, rule scores) "
                       "feed the heads linearly beside the deep part")
    neighbours: int = Field(default=20, ge=0, description="wide path: per item, its most frequent followers in the "
                            "training histories (co-occurrence as an input); 0 turns it off")
    repeat_aware: bool = Field(default=True, description="wide path: learned repeat evidence per action and age, "
                                "per-category return propensity, followers of the latest purchase")
    purchase_followers: bool = Field(default=True, description="wide path: the latest purchase's followers are "
                                     "counted after purchases of the item (not after any event of it)")
    training_snapshots: int = Field(default=1, ge=1, description="feature snapshots T, T - every, ... whose shoppers "
                                    "each give one training example (every label window ends by T + horizon)")
    snapshot_every_days: int = Field(default=7, ge=1, description="days between those snapshots")
    evaluation_memory_mb: float = Field(default=512, gt=0, description="driver memory for one evaluation chunk's users "
                                      "x items scores (the evaluation ranks that many shoppers at a time)")
    refit_heads: bool = Field(default=True, description="after training, refit the price, intent, churn, age band and "
                              "gender heads exactly on the frozen network (L2 chosen on the validation users; kept "
                              "only where that head's validation loss falls) and shift the next items' repeat weight "
                              "to its best validation recall@20 (kept only where it beats the trained weight); "
                              "skipped under DP-SGD")
    patience: int = Field(default=3, ge=0, description="epochs without validation improvement before training stops "
                          "and the best epoch is kept (0: no early stopping, the last epoch is kept)")
    shared_dir: str | None = Field(default=None, description="folder every training node reads and writes (input "
                                   "arrays, weights, checkpoints); default <lakehouse.root>/_training; a dbfs:/ "
                                   "path is used through its /dbfs/ mount")


class ProfilesConfig(_Strict):
    """What the scoring job writes into ``gold/profiles`` and the tables derived from it."""

    top_interests: int = Field(ge=1, description="interest categories kept per profile, best first")
    top_items: int = Field(ge=1, description="recommended items kept per profile")
    demographics: bool = Field(description="write predicted age band and gender (off in prod by default)")
    price_bands: tuple[float, float] = Field(
        description="shares of the training shoppers: an expected price ratio below their first quantile -> "
        "'high' price sensitivity, above the second -> 'low', else 'medium' (the cuts travel with the model)")

    @field_validator("price_bands")
    @classmethod
    def _shares(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < value[0] < value[1] < 1.0:
            raise ValueError(f"price_bands are two shares with 0 < first < second < 1, got {list(value)}")
        return value
    similar_users: int = Field(ge=1, description="nearest users by embedding kept per user")
    explanation_events: int = Field(ge=1, description="behaviour events kept per explained score")
    explanation_features: int = Field(ge=1, description="tabular features kept per explained score")
    explanation_steps: int = Field(ge=1, description="integrated-gradients points on the path (Gauss-Legendre nodes)")
    audiences_file: str = Field(description="declarative audience definitions (YAML)")


class AnalystConfig(_Strict):
    min_group_size: int = Field(ge=1, description="aggregate views suppress every group with fewer users")


class DpSgdConfig(_Strict):
    """Differentially private training (DP-SGD): per-example clipping + Gaussian noise."""

    enabled: bool = Field(default=False, description="train the profile model with DP-SGD")
    l2_norm_clip: float = Field(default=1.0, gt=0, description="per-example gradient L2 bound C")
    noise_multiplier: float = Field(default=1.1, ge=0, description="noise std / C (sigma)")
    delta: float = Field(default=1e-5, gt=0, lt=1, description="the delta of the (epsilon, delta) reported")


class PrivacyConfig(_Strict):
    pseudonym_key_env: str = Field(description="environment variable holding the HMAC key")
    secret_scope: str | None = Field(default=None, description="Databricks secret scope with the key")
    secret_key: str | None = None
    dp_sgd: DpSgdConfig = Field(default_factory=DpSgdConfig)


class Config(_Strict):
    env: Literal["local", "dev", "staging", "prod"]
    lakehouse: LakehouseConfig
    tables: TablesConfig
    data: DataConfig
    mlflow: MlflowConfig
    spark: SparkConfig
    simulator: SimulatorConfig
    ingest: IngestConfig
    features: FeaturesConfig
    model: ModelConfig
    profiles: ProfilesConfig
    analyst: AnalystConfig
    privacy: PrivacyConfig

    @property
    def lakehouse_root(self) -> str:
        return resolve_path(self.lakehouse.root)

    @property
    def training_dir(self) -> str:
        """Where Horovod ranks exchange files with the driver: a path every node mounts, never a
        node's own temp folder (ranks on executors could not hand their weights back)."""
        return node_path(resolve_path(self.model.shared_dir) if self.model.shared_dir else f"{self.lakehouse_root}/_training")

    @property
    def checkpoint_root(self) -> str:
        """Durable training checkpoints (a rerun of the job resumes from here; erasure empties it)."""
        return f"{self.training_dir}/checkpoints/profile_model"

    @property
    def data_dir(self) -> str:
        return resolve_path(self.data.dir)

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        root = self.lakehouse_root
        if "://" in root:
            raise ConfigError(
                "mlflow.tracking_uri must be set when lakehouse.root is a URI "
                f"({root}); sqlite needs a local file"
            )
        return f"sqlite:///{root}/mlflow.db"


def resolve_path(value: str) -> str:
    """Absolute path for a local path (relative ones against the repo root); URIs unchanged."""
    if "://" in value or value.startswith("dbfs:"):
        return value.rstrip("/")
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    return str(path.resolve())


def node_path(location: str) -> str:
    """The POSIX path a process on any node opens for ``location``: ``dbfs:/x`` -> ``/dbfs/x``
    (Databricks' FUSE mount), ``file:///x`` -> ``/x``. TensorFlow checkpoints, h5py and numpy
    write plain files, so an object-store URI is refused with what to set instead."""
    if location.startswith("dbfs:"):
        return "/dbfs/" + location.removeprefix("dbfs:").lstrip("/")
    if location.startswith("file:"):
        return "/" + location.removeprefix("file:").lstrip("/")
    if "://" in location:
        raise ConfigError(f"{location} is not a path training nodes can open; set model.shared_dir to a folder "
                          "every node mounts (a dbfs:/ or /dbfs/ path on Databricks, NFS elsewhere)")
    return location


def node_url(location: str) -> str:
    """A table file as every node's reader opens it: ``dbfs:/x`` -> ``file:///dbfs/x``; object-store
    URIs (s3://, abfss://) as they are, since Petastorm reads those itself."""
    return f"file://{node_path(location)}" if location.startswith(("dbfs:", "file:")) or "://" not in location else location


def conf_dir() -> Path:
    return Path(os.environ.get("SHOPPER_CONF_DIR", PROJECT_ROOT / "conf"))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return loaded


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> {"a": {"b": {"c": value}}}, the value parsed as YAML (so 4 is an int)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--conf-override {text!r}: expected dotted.key=value")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node: dict[str, Any] = {}
    parts = key.strip().split(".")
    cursor = node
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return node


def load_config(env: str = "local", overrides: list[str] | None = None) -> Config:
    """Merge base.yaml, <env>.yaml and the overrides, then validate strictly."""
    if env not in ENVIRONMENTS:
        raise ConfigError(f"--env {env!r} is unknown; use one of {', '.join(ENVIRONMENTS)}")
    folder = conf_dir()
    base_file = folder / "base.yaml"
    if not base_file.exists():
        raise ConfigError(f"{base_file} not found; set SHOPPER_CONF_DIR to the folder holding base.yaml")
    raw = _read_yaml(base_file)
    env_file = folder / f"{env}.yaml"
    if env_file.exists():
        raw = _deep_merge(raw, _read_yaml(env_file))
    for text in overrides or []:
        raw = _deep_merge(raw, parse_override(text))
    raw["env"] = env
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
            problems.append(f"  {key}: {err['msg']}{got}")
        raise ConfigError(
            f"invalid configuration for env {env!r} (conf/base.yaml, conf/{env}.yaml, --conf-override):\n"
            + "\n".join(problems)
        ) from e


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The two options every job takes."""
    parser.add_argument("--env", default="local", choices=ENVIRONMENTS, help="configuration environment")
    parser.add_argument(
        "--conf-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. spark.shuffle_partitions=8 (repeatable)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.env, args.conf_override)
