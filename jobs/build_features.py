"""Build the feature tables for one as-of date or a backfill range (point-in-time correct).

    python jobs/build_features.py --as-of 2024-04-30 --env local
    python jobs/build_features.py --backfill 2024-04-01 2024-04-30 --env local
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.features.build import build_features, dates_between
from shopper_profiles.runtime import cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = job_parser(__doc__ or "")
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--as-of", type=iso_date, help="snapshot date D: features use events with ts < D")
    when.add_argument("--backfill", nargs=2, type=iso_date, metavar=("FROM", "TO"),
                      help="every snapshot date from FROM to TO inclusive")
    job = start_job(parser, argv)
    dates = [job.args.as_of] if job.args.as_of else dates_between(*job.args.backfill)
    reports = build_features(job.spark, job.store, job.config, dates)
    print(json.dumps({"features": reports}, default=str))
    return reports


if __name__ == "__main__":
    cli(main)
