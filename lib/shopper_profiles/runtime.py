"""What every job entry point shares: argument parsing, logging, config, session, store."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pyspark.sql import SparkSession

from shopper_profiles import import_root
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


def cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """What ``python jobs/<job>.py`` (and spark-submit, Databricks, Airflow) runs: the job; a mistake
    the user can fix -- bad config, a table or snapshot not written yet, a missing key or file, all
    raised as ValueError with what to do -- ends with that one line and exit code 2, not a
    traceback (SHOPPER_VERBOSE=1 shows it)."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("SHOPPER_VERBOSE") == "1":
            raise
        print(f"error: {e}\n(SHOPPER_VERBOSE=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def iso_date(text: str) -> date:
    """argparse type of every date flag: a wrong date says which form is expected."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; give it as YYYY-MM-DD, e.g. 2024-04-16") from None


def job_parser(description: str) -> argparse.ArgumentParser:
    return add_config_arguments(argparse.ArgumentParser(description=description,
                                                        formatter_class=argparse.RawDescriptionHelpFormatter))


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
        force=True,  # under spark-submit a root handler already exists and would swallow the jobs' progress
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
    logger.info("env=%s lakehouse=%s engine=%s; shopper_profiles from %s", config.env, config.lakehouse_root, store.engine,
                import_root())
    return JobContext(args=args, config=config, spark=spark, store=store)
