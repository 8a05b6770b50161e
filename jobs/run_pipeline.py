"""The whole pipeline on the embedded default, step by step (`make run`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from shopper_profiles.runtime import job_parser, start_job
from shopper_profiles.smoke import run_smoke

logger = logging.getLogger("run_pipeline")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    job = start_job(parser, argv)
    report: dict[str, Any] = {}
    started = time.time()
    step_started = time.time()
    report["smoke"] = run_smoke(job.spark, job.store)
    report["smoke"]["seconds"] = round(time.time() - step_started, 1)
    report["seconds"] = round(time.time() - started, 1)
    print(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
