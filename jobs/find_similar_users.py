"""For every shopper of profile snapshot D, the K most similar shoppers by profile embedding
(exact cosine) into `gold/similar_users`.

    python jobs/find_similar_users.py --as-of 2024-04-30 --env local
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.profiles.similar import build_similar_users
from shopper_profiles.runtime import cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--as-of", type=iso_date, required=True, help="profile snapshot D whose embeddings are compared")
    job = start_job(parser, argv)
    report = build_similar_users(job.spark, job.store, job.config, job.args.as_of)
    print(json.dumps({"similar_users": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
