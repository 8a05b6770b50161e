"""Join the feature tables of one snapshot into the model-ready training set (labels from the
next `model.horizon_days` days only).

    python jobs/build_training_set.py --as-of 2024-04-16 --env local
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.model.build import build_training_set
from shopper_profiles.runtime import cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--as-of", type=iso_date, required=True,
                        help="training snapshot T: examples as of T, T - snapshot_every_days, ...; labels from the "
                             "horizon after each (T + horizon must be observed)")
    job = start_job(parser, argv)
    report = build_training_set(job.spark, job.store, job.config, job.args.as_of)
    print(json.dumps({"training_set": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
