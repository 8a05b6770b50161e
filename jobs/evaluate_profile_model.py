"""Evaluate a registered profile model on the test users of one snapshot, beside the traditional
baselines (popularity, item co-occurrence, category and RFM rules), protocol next to each number.
Rows go to the Delta table `model_evaluation`; the run and a Markdown report go to MLflow.

    python jobs/evaluate_profile_model.py --as-of 2024-04-30 --env local
    python jobs/evaluate_profile_model.py --as-of 2024-04-30 --model-version 3
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.model.evaluation import evaluate_snapshot
from shopper_profiles.runtime import add_model_arguments, cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--as-of", type=iso_date, required=True,
                        help="evaluation day E: features as of E, labels from [E, E + horizon); the model must be trained before E")
    add_model_arguments(parser)
    job = start_job(parser, argv)
    report = evaluate_snapshot(job.spark, job.store, job.config, job.args.as_of, job.args.model_alias, job.args.model_version)
    print(report["markdown"])
    print(json.dumps({k: v for k, v in report.items() if k != "markdown"}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
