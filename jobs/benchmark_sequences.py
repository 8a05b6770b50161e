"""Next-item benchmark on a sequence file in the S3-Rec format (``user item item ...`` per line),
leave-one-out, full ranking beside 100 sampled negatives, model vs popularity and co-occurrence.

    python jobs/benchmark_sequences.py                                  # ../shared/data/amazon_beauty.txt
    python jobs/benchmark_sequences.py --sequences other.txt --no-attributes --minutes 10
    python jobs/benchmark_sequences.py --ensemble 1                     # one model instead of three

The run is recorded in MLflow; the report (JSON) goes to stdout and, with --out, to a file.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shopper_profiles.config import add_config_arguments, config_from_args
from shopper_profiles.model.sequential import SequentialSpec, run_benchmark
from shopper_profiles.runtime import cli, configure_logging


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = add_config_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--sequences", help="sequence file (default: <data.dir>/amazon_beauty.txt)")
    parser.add_argument("--attributes", help="item -> attribute ids JSON (default: the Beauty one when --sequences "
                                             "is the default file)")
    parser.add_argument("--no-attributes", action="store_true", help="item ids only")
    parser.add_argument("--minutes", type=float, default=SequentialSpec.minutes, help="training budget (wall clock)")
    parser.add_argument("--max-epochs", type=int, default=SequentialSpec.max_epochs,
                        help="epoch limit; early stopping on the validation users usually ends sooner")
    parser.add_argument("--seed", type=int, default=SequentialSpec.seed,
                        help="seed of the first member's initial weights and batch order (member m: seed + m)")
    parser.add_argument("--ensemble", type=int, default=SequentialSpec.ensemble,
                        help="members trained within the budget, ranked by their mean log-probability (1: one model)")
    parser.add_argument("--prefixes", action="store_true",
                        help="train on one prefix per target instead of causal windows (the same states without "
                             "positions, one pass per target instead of one per window)")
    parser.add_argument("--positions", action="store_true",
                        help="absolute position embeddings (a window position then reads differently from a prefix)")
    parser.add_argument("--overlap", type=int, default=None,
                        help="items a causal window shares with the one before it on histories longer than max_len: "
                             "each target then sees at least that many items before it (default: half of max_len; 0: windows side by side)")
    parser.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=SequentialSpec.exclude_seen,
                        help="the training softmax leaves out the items a shopper had before the target, as the "
                             "evaluation's ranking does")
    parser.add_argument("--fusion", action=argparse.BooleanOptionalAction, default=SequentialSpec.fusion,
                        help="rank by the model's log-probability plus a weight x log1p(co-occurrence), the weight "
                             "chosen on validation (the model alone is reported beside it)")
    parser.add_argument("--neighbours", type=int, default=SequentialSpec.neighbours,
                        help="co-occurrence input: each item's top followers in the training histories (0: off)")
    parser.add_argument("--input-terms", default=",".join(SequentialSpec.input_terms),
                        help="co-occurrence terms the network reads as inputs, comma-separated (followers, neighbourhood)")
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    sequences = args.sequences or os.path.join(config.data_dir, "amazon_beauty.txt")
    if not os.path.exists(sequences):
        raise SystemExit(f"{sequences} does not exist; pass --sequences or set data.dir (see ../shared/data/README.md)")
    attributes = None
    if not args.no_attributes:
        attributes = args.attributes or (os.path.join(config.data_dir, "amazon_beauty_item2attributes.json")
                                         if not args.sequences else None)
    spec = SequentialSpec(minutes=args.minutes, max_epochs=args.max_epochs, seed=args.seed, ensemble=args.ensemble,
                          use_attributes=attributes is not None, prefixes=args.prefixes,
                          neighbours=args.neighbours, positions=args.positions, overlap=args.overlap,
                          exclude_seen=args.exclude_seen, fusion=args.fusion,
                          input_terms=tuple(t for t in args.input_terms.split(",") if t))
    report = run_benchmark(sequences, attributes, spec, config.mlflow_tracking_uri, config.mlflow.experiment,
                           log=lambda entry: print(json.dumps(entry), flush=True))
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    cli(main)
