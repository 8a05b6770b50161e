"""The whole pipeline on the embedded default, step by step (`make run`).

Today: lakehouse smoke check -> simulator landed and ingested into bronze (validated,
pseudonymised, reconciled) -> the feature tables for the day after the simulated period ->
the training snapshot (D = that day minus the label horizon, so its labels are observed):
features, training set, Horovod training (2 ranks) with MLflow registry, and the evaluation
against the traditional profiles. Later roadmap steps (scoring) append themselves here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from shopper_profiles.features.build import build_snapshot
from shopper_profiles.ingest.load import Ingestion, reconciliation_report
from shopper_profiles.ingest.sources import land_source
from shopper_profiles.model.build import build_training_set
from shopper_profiles.model.evaluation import evaluate_snapshot
from shopper_profiles.model.tracking import train_and_register
from shopper_profiles.runtime import JobContext, job_parser, start_job
from shopper_profiles.smoke import run_smoke

logger = logging.getLogger("run_pipeline")


def ingest_simulator(job: JobContext) -> dict[str, Any]:
    batch, window, load_id = land_source(job.spark, job.config, "simulator")
    loads = Ingestion(job.spark, job.store, job.config, batch, window, load_id).run()
    return reconciliation_report(loads, load_id)


def latest_day(job: JobContext) -> date:
    sim = job.config.simulator
    return sim.start_date + timedelta(days=sim.days)


def training_day(job: JobContext) -> date:
    """The latest snapshot whose label window [D, D + horizon) bronze has fully seen."""
    return latest_day(job) - timedelta(days=job.config.model.horizon_days)


def build_latest_features(job: JobContext) -> dict[str, Any]:
    return build_snapshot(job.spark, job.store, job.config, latest_day(job))


def build_training_snapshot(job: JobContext) -> dict[str, Any]:
    features = build_snapshot(job.spark, job.store, job.config, training_day(job))
    return {"features": features, "training_set": build_training_set(job.spark, job.store, job.config, training_day(job))}


def train(job: JobContext) -> dict[str, Any]:
    report = train_and_register(job.store, job.config, training_day(job), num_proc=2)
    return {k: report[k] for k in ("run_id", "model_version", "champion", "metrics", "model_uri")}


def evaluate(job: JobContext) -> dict[str, Any]:
    report = evaluate_snapshot(job.spark, job.store, job.config, training_day(job))
    return {k: report[k] for k in ("model_uri", "model_version", "test_users", "rows", "headline", "mlflow_run_id")}


STEPS: list[tuple[str, Callable[[JobContext], dict[str, Any]]]] = [
    ("smoke", lambda job: run_smoke(job.spark, job.store)),
    ("ingest", ingest_simulator),
    ("features", build_latest_features),
    ("training_set", build_training_snapshot),
    ("train", train),
    ("evaluate", evaluate),
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--steps", help="comma-separated subset of: " + ", ".join(name for name, _ in STEPS))
    job = start_job(parser, argv)
    wanted = set(job.args.steps.split(",")) if job.args.steps else {name for name, _ in STEPS}
    report: dict[str, Any] = {}
    started = time.time()
    for name, step in STEPS:
        if name not in wanted:
            continue
        step_started = time.time()
        logger.info("step %s", name)
        report[name] = step(job)
        report[name]["seconds"] = round(time.time() - step_started, 1)
    report["seconds"] = round(time.time() - started, 1)
    print(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
