"""The one place that builds a SparkSession; everything else receives ``spark`` as an argument."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from shopper_profiles.config import PROJECT_ROOT, Config

logger = logging.getLogger(__name__)

# Settings every environment needs for the lakehouse contract: UTC everywhere, and Parquet
# timestamps as INT64 micros (Delta's timestamp type; INT96 is not readable by delta-rs stats).
_CONTRACT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.sources.partitionOverwriteMode": "static",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Generated and feature plans are wide; unbounded plan strings have exhausted the driver heap.
    "spark.sql.maxPlanStringLength": "100000",
    # Whole-stage code over Spark's default limit (64 KB) is still generated, but the JVM never
    # compiles a method over 8,000 bytes: ingestion's 28 rules then ran interpreted, 2.2x slower
    # (10.8 s vs 5.0 s at 1.2 M events). At 8,000 Spark splits such a stage instead.
    "spark.sql.codegen.hugeMethodLimit": "8000",
}


def build_spark(config: Config) -> SparkSession:
    """Local session when config names a master; on a cluster only ``getOrCreate()``."""
    active = SparkSession.getActiveSession()
    if active is not None:
        _apply_contract(active)
        return active
    builder = SparkSession.builder.appName(config.spark.app_name)
    if config.spark.master:
        builder = _local_builder(builder, config)
    for key, value in config.spark.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    _apply_contract(spark)
    _ship_wheels(spark)
    return spark


def submitted() -> bool:
    """True inside ``spark-submit``: its JVM launched this Python (and its ``--master`` decides)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _ship_wheels(spark: SparkSession) -> None:
    """Put the wheels of ``spark-submit --py-files`` on the executors' Python path too.

    Spark adds every ``--py-files`` entry to the driver's path but only ``.zip``/``.egg``/``.jar``
    ones to the executors' (pyspark's ``PACKAGE_EXTENSIONS``); a pure-Python wheel is a zip
    archive, so the same bytes are added again under a ``.zip`` name. Without this, code that
    runs in executors' Python workers (scoring's ``mapInPandas``) fails with
    ``ModuleNotFoundError: shopper_profiles`` on every node that lacks the library."""
    import shutil
    import tempfile

    from pyspark import SparkFiles

    context = spark.sparkContext
    for path in filter(None, context.getConf().get("spark.submit.pyFiles", "").split(",")):
        name = os.path.basename(path)
        if not name.endswith(".whl") or any(f.endswith("/" + name[:-4] + ".zip") for f in context.listFiles):
            continue
        shipped = Path(SparkFiles.getRootDirectory()) / name
        source = shipped if shipped.exists() else Path(path.removeprefix("file:"))
        archive = Path(tempfile.mkdtemp(prefix="wheel-")) / (name[:-4] + ".zip")
        shutil.copyfile(source, archive)
        context.addPyFile(str(archive))
        logger.info("shipped %s to the executors' Python path", name)


def _apply_contract(spark: SparkSession) -> None:
    for key, value in _CONTRACT_CONF.items():
        spark.conf.set(key, value)


def _local_builder(builder: SparkSession.Builder, config: Config) -> SparkSession.Builder:
    root = Path(config.lakehouse_root)
    tmp = root / "_tmp"
    (tmp / "spark").mkdir(parents=True, exist_ok=True)
    # Executors are Python workers of this interpreter (the venv), not whatever is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    java_opts = f"-Dderby.system.home={tmp / 'derby'} -Djava.io.tmpdir={tmp / 'spark'} {config.spark.driver_java_options}".strip()
    quiet = PROJECT_ROOT / "conf" / "log4j2.properties"
    if os.environ.get("SHOPPER_VERBOSE") != "1" and quiet.exists():  # start-up WARNs a user cannot act on
        java_opts += f" -Dlog4j2.configurationFile=file:{quiet}"
    local_conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.default.parallelism": str(max(2, config.spark.shuffle_partitions)),
        "spark.driver.memory": config.spark.driver_memory,
        "spark.local.dir": str(tmp / "spark"),
        "spark.sql.warehouse.dir": str(tmp / "warehouse"),
        "spark.driver.extraJavaOptions": java_opts,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }
    if not submitted():  # under spark-submit its --master (and --driver-memory) decide
        local_conf["spark.master"] = config.spark.master or "local[*]"
    for key, value in local_conf.items():
        builder = builder.config(key, value)
    logger.info("local Spark session %s, temp dirs under %s", "of spark-submit" if submitted() else config.spark.master, tmp)
    return builder


def delta_classes_available(spark: SparkSession) -> bool:
    """True when the native Delta Lake classes are on the JVM classpath (Databricks, --packages)."""
    try:
        jvm: Any = spark.sparkContext._jvm
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
        return True
    except Exception:  # noqa: BLE001 - py4j raises its own error types for a missing class
        return False
