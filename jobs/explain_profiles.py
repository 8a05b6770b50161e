"""Explain every profile of snapshot D: the behaviour events and tabular features that most drove
each shopper's top interest and purchase intent (integrated gradients), into
`gold/profile_explanations`, with the deletion test of faithfulness in the report.

    python jobs/explain_profiles.py --as-of 2024-04-30 --env local
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.profiles.explanations import explain_snapshot
from shopper_profiles.runtime import add_model_arguments, cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--as-of", type=iso_date, required=True, help="profile snapshot D to explain")
    parser.add_argument("--faithfulness-users", type=int, default=300, help="users in the deletion test")
    add_model_arguments(parser)
    job = start_job(parser, argv)
    report = explain_snapshot(job.spark, job.store, job.config, job.args.as_of, job.args.model_alias,
                              job.args.model_version, job.args.faithfulness_users)
    print(json.dumps({"explanations": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
