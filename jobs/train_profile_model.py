"""Train the profile model with Horovod on one snapshot's training set, track it in MLflow and
register it (alias `champion` when it validates at least as well as the current one).

    python jobs/train_profile_model.py --as-of 2024-04-16 --np 2 --env local
    python jobs/train_profile_model.py --as-of 2024-04-16 --np 8 --launcher spark --env prod
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.model.tracking import train_and_register
from shopper_profiles.runtime import cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--as-of", type=iso_date, required=True, help="training snapshot T (build_training_set --as-of T first)")
    parser.add_argument("--np", type=int, default=2, help="Horovod processes (ranks)")
    parser.add_argument("--launcher", choices=["horovodrun", "spark"], default="horovodrun",
                        help="horovodrun: ranks on this machine; spark: horovod.spark.run on executor tasks (a cluster)")
    parser.add_argument("--epochs", type=int, help="override model.epochs")
    job = start_job(parser, argv)
    report = train_and_register(job.store, job.config, job.args.as_of, job.args.np, job.args.launcher, job.args.epochs)
    print(json.dumps({"train": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
