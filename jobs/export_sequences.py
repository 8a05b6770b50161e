"""Export the shop's item sequences as a public sequence file (``user item item ...``, S3-Rec
format: each shopper's distinct items in the order first touched, 5-core filtered), so the public
next-item benchmark runs on this shop's own data.

    python jobs/export_sequences.py --env local --out /tmp/shop.txt
    python jobs/export_sequences.py --conf-override lakehouse.root=lakehouse-online_retail --out /tmp/retail.txt
    python jobs/benchmark_sequences.py --sequences /tmp/retail.txt --no-attributes
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopper_profiles.features.export import export_sequences
from shopper_profiles.runtime import cli, iso_date, job_parser, start_job


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--out", required=True, help="the sequence file to write (keep it outside the repository)")
    parser.add_argument("--event-types", nargs="+", default=["purchase"],
                        help="which events count as an interaction (default: purchase)")
    parser.add_argument("--min-count", type=int, default=5, help="k of the k-core filter on shoppers and items")
    parser.add_argument("--until", type=iso_date, help="only events before this date (default: all)")
    job = start_job(parser, argv)
    report = export_sequences(job.store, job.args.out, job.args.event_types, job.args.min_count, job.args.until)
    print(json.dumps({"export": report}, default=str))
    return report


if __name__ == "__main__":
    cli(main)
