"""Create the lakehouse and a smoke table end to end: `python jobs/smoke_table.py --env local`."""

from __future__ import annotations

import json
from collections.abc import Sequence

from shopper_profiles.runtime import cli, job_parser, start_job
from shopper_profiles.smoke import run_smoke


def main(argv: Sequence[str] | None = None) -> dict:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--users", type=int, default=10_000, help="synthetic shoppers written to the smoke table")
    job = start_job(parser, argv)
    summary = run_smoke(job.spark, job.store, users=job.args.users)
    print(json.dumps({"smoke": summary}, default=str))
    return summary


if __name__ == "__main__":
    cli(main)
