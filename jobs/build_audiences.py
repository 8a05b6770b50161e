"""Materialise the audiences of `conf/audiences.yaml` (profiles.audiences_file) for profile
snapshot D into `gold/audience_members`, and append their sizes to `gold/audience_sizes`.

    python jobs/build_audiences.py --as-of 2024-04-30 --env local
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.profiles.audiences import build_audiences
from shopper_profiles.runtime import cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--as-of", type=iso_date, required=True, help="profile snapshot D (score_profiles --as-of D first)")
    job = start_job(parser, argv)
    report = build_audiences(job.spark, job.store, job.config, job.args.as_of)
    print(json.dumps({"audiences": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
