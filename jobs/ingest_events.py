"""Validate, pseudonymise, deduplicate and load a source into bronze, with reconciliation.

    python jobs/ingest_events.py --source simulator [--from 2024-01-01 --to 2024-02-01] --env local
    python jobs/ingest_events.py --source online_retail --env local
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from shopper_profiles.ingest.sources import SOURCES, ingest_source
from shopper_profiles.runtime import cli, iso_date, job_parser, start_job

logger = logging.getLogger("ingest_events")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--source", required=True, choices=sorted(SOURCES), help="which source adapter lands the data")
    parser.add_argument("--from", dest="start", type=iso_date, help="window start (inclusive)")
    parser.add_argument("--to", dest="end", type=iso_date, help="window end (exclusive)")
    parser.add_argument("--path", help="input file (default: the data set under data.dir)")
    job = start_job(parser, argv)
    report = ingest_source(job.spark, job.store, job.config, job.args.source, job.args.start, job.args.end, job.args.path)
    load_id = report["load_id"]
    for entity, counts in report["entities"].items():
        logger.info("%s %s: input=%d accepted=%d quarantined=%d duplicates=%d (new=%d, already loaded=%d)",
                    load_id, entity, counts["input_rows"], counts["accepted_rows"], counts["quarantined_rows"],
                    counts["duplicate_rows"], counts["new_rows"], counts["already_loaded_rows"])
    print(json.dumps({"ingest": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
