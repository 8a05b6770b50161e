"""Next-window demand per category from profile snapshot D into `gold/category_demand`, beside the
naive last-window forecast and, once the window is observed, the actual count (WAPE of both).

    python jobs/forecast_demand.py --as-of 2024-04-30 --env local
    python jobs/forecast_demand.py --as-of 2024-04-16 --population test_users --env local   # backtest
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.profiles.demand import POPULATIONS, forecast_demand
from shopper_profiles.runtime import cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--as-of", type=iso_date, required=True, help="profile snapshot D: demand for [D, D + horizon)")
    parser.add_argument("--population", choices=POPULATIONS, default="all_users",
                        help="whose demand is summed: every profiled shopper, or (test_users, for a backtest) the "
                             "shoppers held out from the model's training by the evaluation's rule")
    job = start_job(parser, argv)
    report = forecast_demand(job.spark, job.store, job.config, job.args.as_of, job.args.population)
    print(json.dumps({"demand": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
