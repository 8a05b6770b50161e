"""What every job entry point shares: argument parsing, logging, config, session, store."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import SparkSession

from shopper_profiles.config import Config, add_config_arguments, config_from_args
from shopper_profiles.spark import build_spark
from shopper_profiles.storage import DeltaStore, open_store

logger = logging.getLogger(__name__)


@dataclass
class JobContext:
    args: argparse.Namespace
    config: Config
    spark: SparkSession
    store: DeltaStore


def job_parser(description: str) -> argparse.ArgumentParser:
    return add_config_arguments(argparse.ArgumentParser(description=description))


def add_model_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Which registered model a consuming job uses: an alias (default champion) or a fixed version."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model-alias", help="registered-model alias (default: champion)")
    which.add_argument("--model-version", help="registered-model version number")
    return parser


# Third-party chatter a user cannot act on: deprecation notices of petastorm/pyarrow/transformers,
# MLflow progress bars and store set-up, TF C++ start-up logs. Exported so Spark's Python workers
# and the Horovod ranks (child processes) inherit it. SHOPPER_VERBOSE=1 shows everything.
QUIET_ENV = {
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,ignore::UserWarning",
    "TRANSFORMERS_VERBOSITY": "error",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    "TF_USE_LEGACY_KERAS": "1",
}


def quiet_third_party() -> None:
    import warnings

    if os.environ.get("SHOPPER_VERBOSE") == "1":
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for noisy in ("py4j", "pyspark", "mlflow", "alembic", "transformers", "tensorflow", "absl", "petastorm", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("SHOPPER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_third_party()


def start_job(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> JobContext:
    """Parse, validate config (fails before any Spark work), then start Spark and the store."""
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    spark = build_spark(config)
    if os.environ.get("SHOPPER_VERBOSE") != "1":
        spark.sparkContext.setLogLevel("ERROR")  # planner WARNs (e.g. single-partition windows) are not the user's to act on
    store = open_store(spark, config)
    logger.info("env=%s lakehouse=%s engine=%s", config.env, config.lakehouse_root, store.engine)
    return JobContext(args=args, config=config, spark=spark, store=store)
