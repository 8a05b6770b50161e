"""Erase shoppers on request (right to erasure): their rows leave every table, the quarantine,
the landing zone and the training checkpoints; tables are vacuumed and their history dropped;
model versions trained on their data are tagged `needs_retrain`; a keyed token (never the raw
id) is kept so that a later ingest of the same shopper is refused and counted.

    python jobs/erase_users.py --users requests.txt --source simulator --env local
    python jobs/erase_users.py --users requests.csv --env local      # lines: source,raw_user_id
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from shopper_profiles.erasure import Erasure, read_requests
from shopper_profiles.ingest.sources import SOURCES
from shopper_profiles.runtime import cli, job_parser, start_job

logger = logging.getLogger("erase_users")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--users", required=True,
                        help="file of raw user ids, one per line (with --source), or CSV lines source,raw_user_id")
    parser.add_argument("--source", choices=sorted(SOURCES), help="the source of bare ids in --users")
    job = start_job(parser, argv)
    requests = read_requests(job.args.users, job.args.source)
    report = Erasure(job.spark, job.store, job.config, requests).run()
    logger.info("erased %d shopper(s): %d table rows, %d landed rows, %d checkpoints; %d model version(s) need retraining",
                report["shoppers"], sum(report["deleted_rows"].values()), report["landing_rows"],
                report["checkpoints_removed"], len(report["models_needing_retrain"]))
    print(json.dumps({"erasure": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
