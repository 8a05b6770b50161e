"""Score every shopper active before D with a registered profile model into the Delta table
`gold/profiles` (partition as_of = D; rerunning replaces that D only).

    python jobs/score_profiles.py --as-of 2024-04-30 --env local                  # the champion
    python jobs/score_profiles.py --as-of 2024-04-30 --model-version 3 --env local
    python jobs/score_profiles.py --as-of 2024-05-01 --incremental --env local    # only shoppers with new events
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.profiles.scoring import score_profiles
from shopper_profiles.runtime import add_model_arguments, cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--as-of", type=iso_date, required=True, help="feature snapshot D to score")
    parser.add_argument("--incremental", action="store_true",
                        help="re-score only shoppers with events since the previous profile snapshot, carry the rest")
    add_model_arguments(parser)
    job = start_job(parser, argv)
    report = score_profiles(job.spark, job.store, job.config, job.args.as_of, job.args.model_alias,
                            job.args.model_version, job.args.incremental)
    print(json.dumps({"profiles": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
