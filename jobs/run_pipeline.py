"""The whole pipeline on the embedded default, step by step (`make run`).

Today: lakehouse smoke check -> simulator landed and ingested into bronze (validated,
pseudonymised, reconciled) -> the feature tables for the day after the simulated period.
Later roadmap steps (training, scoring) append themselves here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from shopper_profiles.features.build import build_snapshot
from shopper_profiles.ingestion import Ingestion, reconciliation_report
from shopper_profiles.runtime import JobContext, job_parser, start_job
from shopper_profiles.smoke import run_smoke
from shopper_profiles.sources import land_source

logger = logging.getLogger("run_pipeline")


def ingest_simulator(job: JobContext) -> dict[str, Any]:
    batch, window, load_id = land_source(job.spark, job.config, "simulator")
    loads = Ingestion(job.spark, job.store, job.config, batch, window, load_id).run()
    return reconciliation_report(loads, load_id)


def build_latest_features(job: JobContext) -> dict[str, Any]:
    sim = job.config.simulator
    as_of = sim.start_date + timedelta(days=sim.days)
    return build_snapshot(job.spark, job.store, job.config, as_of)


STEPS: list[tuple[str, Callable[[JobContext], dict[str, Any]]]] = [
    ("smoke", lambda job: run_smoke(job.spark, job.store)),
    ("ingest", ingest_simulator),
    ("features", build_latest_features),
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
