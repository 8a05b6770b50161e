"""Benchmarks (not tests): `make bench` runs them and rewrites their section of docs/BENCHMARKS.md.

    python -m shopper_profiles.bench --suite ingest --events 1000000,10000000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shopper_profiles.config import PROJECT_ROOT, add_config_arguments, config_from_args

logger = logging.getLogger(__name__)

EVENTS_PER_USER = 121.7  # measured: simulator defaults over 120 days (see docs/BENCHMARKS.md)
RESULTS = PROJECT_ROOT / "bench_results"
REPORT = PROJECT_ROOT / "docs" / "BENCHMARKS.md"


def machine() -> dict[str, Any]:
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "memory_gib": mem_gib, "cpu": cpu, "python": platform.python_version()}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=PROJECT_ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_ingest(args: argparse.Namespace, sizes: Sequence[int]) -> dict[str, Any]:
    """Simulator (generate + land) and ingestion (validate, dedupe, pseudonymise, commit)
    throughput at each size, each on a fresh lakehouse, in one Spark session."""
    from shopper_profiles.ingestion import Ingestion
    from shopper_profiles.sources import land_source
    from shopper_profiles.spark import build_spark
    from shopper_profiles.storage import open_store

    os.environ.setdefault("SHOPPER_PSEUDONYM_KEY", "benchmark-key")
    runs = []
    spark = None
    for target in sizes:
        users = max(10, round(target / EVENTS_PER_USER))
        root = RESULTS / f"lakehouse-ingest-{target}"
        shutil.rmtree(root, ignore_errors=True)
        args.conf_override = [*args.base_overrides, f"lakehouse.root={root}", f"simulator.users={users}"]
        config = config_from_args(args)
        spark = spark or build_spark(config)
        store = open_store(spark, config)
        (batch, window, load_id), simulate_s = timed(lambda config=config: land_source(spark, config, "simulator"))
        landed = batch.events.count()
        loads, ingest_s = timed(lambda: Ingestion(spark, store, config, batch, window, load_id).run())
        (events,) = [x for x in loads if x.entity == "events"]
        _, rerun_s = timed(lambda: Ingestion(spark, store, config, batch, window, load_id).run())
        run = {
            "target_events": target, "users": users, "landed_events": landed,
            "accepted": events.accepted_rows, "quarantined": events.quarantined_rows,
            "duplicates": events.duplicate_rows,
            "simulate_s": round(simulate_s, 1), "ingest_s": round(ingest_s, 1), "rerun_s": round(rerun_s, 1),
            "simulate_events_per_s": round(landed / simulate_s), "ingest_events_per_s": round(landed / ingest_s),
            "end_to_end_events_per_s": round(landed / (simulate_s + ingest_s)),
        }
        logger.info("ingest benchmark %s", run)
        runs.append(run)
        shutil.rmtree(root, ignore_errors=True)
    result: dict[str, Any] = {"runs": runs}
    if len(runs) >= 2:
        small, large = runs[0], runs[-1]
        per_event = lambda r: (r["simulate_s"] + r["ingest_s"]) / r["landed_events"]  # noqa: E731
        result["per_event_cost_ratio_large_vs_small"] = round(per_event(large) / per_event(small), 3)
    return result


def render_ingest(result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "## Simulator + ingestion throughput ([2/7])",
        "",
        f"- Machine: {meta['machine']['cores']} cores ({meta['machine']['cpu']}), {meta['machine']['memory_gib']} GiB, "
        f"Python {meta['machine']['python']}; Spark `{meta['master']}`; commit `{meta['commit']}`; {meta['date']}.",
        f"- Command: `{meta['command']}`",
        "- Protocol: one Spark session; per size a fresh lakehouse; *simulate* = generate the seeded world for the "
        "default 120 days and write it to the landing zone (Parquet); *ingest* = validate every row (27 rules), "
        "quarantine, exact/near dedupe, pseudonymise (HMAC), anti-join against bronze, commit to Delta (delta-rs), "
        "reconcile; *rerun* = the same window again (idempotent: appends nothing). Events/s = landed events / wall "
        "seconds. Sizes are set by user count (121.7 events/user).",
        "",
        "| target events | landed | accepted | quarantined | duplicates | simulate s | ingest s | rerun s | "
        "simulate ev/s | ingest ev/s | end-to-end ev/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['target_events']:,} | {r['landed_events']:,} | {r['accepted']:,} | {r['quarantined']:,} | "
            f"{r['duplicates']:,} | {r['simulate_s']} | {r['ingest_s']} | {r['rerun_s']} | "
            f"{r['simulate_events_per_s']:,} | {r['ingest_events_per_s']:,} | {r['end_to_end_events_per_s']:,} |"
        )
    if "per_event_cost_ratio_large_vs_small" in result:
        lines += ["", f"Per-event cost, largest vs smallest size: **{result['per_event_cost_ratio_large_vs_small']}x** "
                      "(1.0 = linear scaling; below 1 = fixed costs amortised)."]
    return "\n".join(lines) + "\n"


def write_section(name: str, body: str) -> None:
    """Replace (or add) one suite's section of docs/BENCHMARKS.md between markers."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    text = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n\nWritten by `make bench`.\n"
    block = f"{begin}\n{body}{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = add_config_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--suite", choices=["ingest"], action="append")
    parser.add_argument("--events", default="1000000,10000000", help="comma-separated event counts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.base_overrides = list(args.conf_override) + ["spark.master=local[2]"]
    RESULTS.mkdir(exist_ok=True)
    suites = args.suite or ["ingest"]
    sizes = [int(s) for s in args.events.split(",")]
    out: dict[str, Any] = {}
    meta = {
        "machine": machine(), "commit": git_commit(), "master": "local[2]",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "make bench" if argv is None and os.environ.get("MAKELEVEL") else
        "python -m shopper_profiles.bench " + " ".join(argv or []),
    }
    if "ingest" in suites:
        out["ingest"] = bench_ingest(args, sizes)
        write_section("ingest", render_ingest(out["ingest"], meta))
    (RESULTS / "latest.json").write_text(json.dumps({"meta": meta, **out}, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
