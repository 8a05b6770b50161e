"""Routine upkeep of every lakehouse table: compact small files (optimize), then vacuum the files
no version within `lakehouse.vacuum_retention_hours` needs. Run it weekly (the soak benchmark
does: file counts stay bounded).

    python jobs/maintain_tables.py --env local
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from shopper_profiles.catalog import maintain_lakehouse
from shopper_profiles.runtime import cli, job_parser, start_job

logger = logging.getLogger("maintain_tables")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--retention-hours", type=int, help="override lakehouse.vacuum_retention_hours")
    job = start_job(parser, argv)
    report = maintain_lakehouse(job.spark, job.store, job.config, job.args.retention_hours)
    for table, counts in report.items():
        logger.info("%s: %d -> %d live files, %d vacuumed", table, counts["files_before"], counts["files_after"],
                    counts["vacuumed"])
    print(json.dumps({"maintenance": report}))
    return report


if __name__ == "__main__":
    cli(main)
