"""The session factory: local settings for local runs, getOrCreate on a cluster."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession
from shopper_profiles.config import load_config
from shopper_profiles.spark import build_spark, delta_classes_available
from shopper_profiles.storage import DeltaRsStore, open_store


def test_local_session_has_the_lakehouse_contract(spark: SparkSession) -> None:
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.ui.enabled") == "false"
    assert conf.get("spark.master") == "local[2]"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == "TIMESTAMP_MICROS"
    assert "lakehouse-session" in conf.get("spark.local.dir")
    # The local profile's JVM options reach the driver JVM (throughput GC for batch work, #11 d1).
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    assert "PS Scavenge" in {bean.getName() for bean in beans}


def test_cluster_config_reuses_the_active_session(spark: SparkSession) -> None:
    # prod has no master: the factory must hand back the running session, not build one.
    assert build_spark(load_config("prod")) is spark


def test_auto_engine_falls_back_to_delta_rs_without_jars(spark: SparkSession, tmp_path, storage_engine) -> None:
    if storage_engine == "spark-delta":
        pytest.skip("the Delta jars are loaded in this run")
    config = load_config("local", [f"lakehouse.root={tmp_path}", "lakehouse.engine=auto"])
    assert delta_classes_available(spark) is False
    assert isinstance(open_store(spark, config), DeltaRsStore)


def test_spark_delta_without_jars_says_how_to_get_them(spark: SparkSession, tmp_path, storage_engine) -> None:
    if storage_engine == "spark-delta":
        pytest.skip("the Delta jars are loaded in this run")
    config = load_config("local", [f"lakehouse.root={tmp_path}", "lakehouse.engine=spark-delta"])
    with pytest.raises(ValueError, match=r"--packages io\.delta:delta-spark_2\.12:3\.3\.2"):
        open_store(spark, config)
