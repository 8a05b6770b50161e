"""Typed config: merges, overrides, and start-up errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from shopper_profiles.config import PROJECT_ROOT, ConfigError, load_config, node_path, node_url, parse_override
from shopper_profiles.runtime import job_parser


def test_local_defaults_resolve_paths_against_the_repo() -> None:
    config = load_config("local")
    assert config.env == "local"
    assert config.lakehouse.engine == "delta-rs"
    assert config.lakehouse_root == str(PROJECT_ROOT / "lakehouse")
    assert config.data_dir == str((PROJECT_ROOT / "../shared/data").resolve())
    assert config.spark.master == "local[*]"
    assert config.spark.shuffle_partitions == 4  # local.yaml overrides base.yaml's 200
    assert config.mlflow_tracking_uri == f"sqlite:///{PROJECT_ROOT / 'lakehouse'}/mlflow.db"


def test_prod_is_cluster_only() -> None:
    config = load_config("prod")
    assert config.spark.master is None  # the factory then only calls getOrCreate()
    assert config.lakehouse.engine == "spark-delta"
    assert config.lakehouse_root.startswith("dbfs:/")
    assert config.mlflow_tracking_uri == "databricks"


def test_training_files_live_where_every_node_reaches_them() -> None:
    prod = load_config("prod")
    root = prod.lakehouse_root.removeprefix("dbfs:")
    assert prod.training_dir == f"/dbfs{root}/_training"  # Databricks' FUSE mount, not dbfs:/ through open()
    assert prod.checkpoint_root == f"/dbfs{root}/_training/checkpoints/profile_model"
    assert load_config("local").training_dir == str(PROJECT_ROOT / "lakehouse" / "_training")
    assert load_config("local", ["model.shared_dir=/mnt/nfs/train"]).training_dir == "/mnt/nfs/train"
    assert node_path("file:///x/y") == "/x/y" and node_path("dbfs:/a/b") == "/dbfs/a/b"
    assert node_url("dbfs:/a/part-0.parquet") == "file:///dbfs/a/part-0.parquet"
    assert node_url("/a/part-0.parquet") == "file:///a/part-0.parquet"
    assert node_url("s3://bucket/a.parquet") == "s3://bucket/a.parquet"  # Petastorm reads object stores itself
    with pytest.raises(ConfigError, match="model.shared_dir"):
        _ = load_config("local", ["lakehouse.root=s3://bucket/lh", "mlflow.tracking_uri=databricks"]).training_dir


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    config = load_config("local", [f"lakehouse.root={tmp_path}", "spark.shuffle_partitions=8",
                                   "mlflow.tracking_uri=http://127.0.0.1:5000"])
    assert config.lakehouse_root == str(tmp_path)
    assert config.spark.shuffle_partitions == 8
    assert config.mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_unknown_key_fails_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitons: Extra inputs are not permitted"):
        load_config("local", ["spark.shuffle_partitons=8"])


def test_wrong_type_fails_naming_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions: .*integer.*\(got 'many'\)"):
        load_config("local", ["spark.shuffle_partitions=many"])


def test_bad_engine_and_range_fail() -> None:
    with pytest.raises(ConfigError, match=r"lakehouse\.engine"):
        load_config("local", ["lakehouse.engine=parquet"])
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions: .*greater than or equal to 1"):
        load_config("local", ["spark.shuffle_partitions=0"])
    with pytest.raises(ConfigError, match=r"profiles\.price_bands: .*two shares with 0 < first < second < 1, got \[0\.9, 1\.1\]"):
        load_config("local", ["profiles.price_bands=[0.9, 1.1]"])  # the old ratio cuts are refused, not misread


def test_bad_override_syntax_and_env() -> None:
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override("spark.master")
    with pytest.raises(ConfigError, match="--env 'qa' is unknown"):
        load_config("qa")


def test_every_job_parser_takes_env_and_overrides() -> None:
    args = job_parser("x").parse_args(["--env", "dev", "--conf-override", "a.b=1", "--conf-override", "c=2"])
    assert args.env == "dev"
    assert args.conf_override == ["a.b=1", "c=2"]


def test_conf_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "base.yaml").write_text((PROJECT_ROOT / "conf" / "base.yaml").read_text().replace(
        "shuffle_partitions: 200", "shuffle_partitions: 3"))
    monkeypatch.setenv("SHOPPER_CONF_DIR", str(tmp_path))
    assert load_config("local").spark.shuffle_partitions == 3  # no local.yaml there
    (tmp_path / "local.yaml").write_text("spark: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("local")
