"""The whole pipeline on the embedded default, step by step (`make run`), or on a real source
(`--source online_retail`, `make run-online-retail`).

simulate + ingest (validated, pseudonymised, reconciled) -> the feature tables of the latest day L
-> the evaluation day E = L - horizon (the latest whose next window is observed) and the training
day T = E - horizon (its labels end where E's test window starts: a time holdout): features,
training set at T -> Horovod training (2 ranks) with the MLflow registry -> evaluation at E against
the traditional profiles -> profiles scored at E (full) and refreshed at L (incremental) ->
explanations -> audiences, similar shoppers and category demand (backtest at E on the test
shoppers, forecast at L).

    python jobs/run_pipeline.py --env local                                     # make run
    python jobs/run_pipeline.py --steps train,evaluate --json --env local       # two steps again
    python jobs/run_pipeline.py --source online_retail --conf-override lakehouse.root=lakehouse-online_retail
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from pyspark.sql import functions as F
from shopper_profiles.features.build import build_snapshot
from shopper_profiles.ingest.bronze import EVENTS
from shopper_profiles.ingest.sources import SOURCES, ingest_source
from shopper_profiles.model.build import build_training_set, example_dates
from shopper_profiles.model.evaluation import evaluate_snapshot
from shopper_profiles.model.tracking import train_and_register
from shopper_profiles.profiles.audiences import build_audiences
from shopper_profiles.profiles.demand import forecast_demand
from shopper_profiles.profiles.explanations import explain_snapshot
from shopper_profiles.profiles.scoring import score_profiles
from shopper_profiles.profiles.similar import build_similar_users
from shopper_profiles.runtime import JobContext, cli, job_parser, start_job
from shopper_profiles.smoke import run_smoke
from shopper_profiles.storage import DeltaStore

logger = logging.getLogger("run_pipeline")


def observed_days(job: JobContext) -> tuple[date, date]:
    """The first day with events and the day after the last one: the simulator's configured
    period, or what bronze holds for a real source (each source in its own lakehouse)."""
    if job.args.source == "simulator":
        sim = job.config.simulator
        return sim.start_date, sim.start_date + timedelta(days=sim.days)
    if not job.store.exists(EVENTS):
        raise ValueError(f"no bronze events in {job.config.lakehouse_root}; run the ingest step for {job.args.source} first")
    return _bronze_period(job.store)


@functools.cache
def _bronze_period(store: DeltaStore) -> tuple[date, date]:
    """One scan of bronze per store: every step asks for the period several times, and nothing asks
    before the ingest step, after which a run does not change bronze."""
    first, last = store.read(EVENTS).agg(F.min("ts"), F.max("ts")).collect()[0]
    return first.date(), last.date() + timedelta(days=1)


def latest_day(job: JobContext) -> date:
    return observed_days(job)[1]


def evaluation_day(job: JobContext) -> date:
    """The latest snapshot whose label window [D, D + horizon) bronze has fully seen."""
    return latest_day(job) - timedelta(days=job.config.model.horizon_days)


def training_day(job: JobContext) -> date:
    """One horizon before the evaluation day, so the model's labels end where the test window
    starts (time holdout); a shop too short for that trains on the evaluation day (user holdout)."""
    horizon = timedelta(days=job.config.model.horizon_days)
    day = evaluation_day(job) - horizon
    if day < observed_days(job)[0] + horizon:
        logger.warning("the observed period is too short for a time holdout; training on %s (user holdout)",
                       evaluation_day(job))
        return evaluation_day(job)
    return day


def build_training_snapshot(job: JobContext, _: dict[str, Any] | None = None) -> dict[str, Any]:
    """Features at every snapshot the training set draws examples from (T, T - 7d, ...) and at E."""
    days = {*example_dates(job.config, training_day(job)), evaluation_day(job)}
    features = {str(day): build_snapshot(job.spark, job.store, job.config, day) for day in sorted(days)}
    return {"features": features, "training_set": build_training_set(job.spark, job.store, job.config, training_day(job))}


def train(job: JobContext, _: dict[str, Any] | None = None) -> dict[str, Any]:
    report = train_and_register(job.store, job.config, training_day(job), num_proc=2)
    return {k: report[k] for k in ("run_id", "model_version", "champion", "metrics", "model_uri", "history", "dp")}


def evaluate(job: JobContext, done: dict[str, Any]) -> dict[str, Any]:
    """The model this run trained (else the champion) against the traditional profiles at E."""
    trained = done["train"]["model_version"] if "train" in done else None
    report = evaluate_snapshot(job.spark, job.store, job.config, evaluation_day(job), model_version=trained)
    return {k: report[k] for k in ("model_uri", "model_version", "holdout", "test_users", "rows", "headline", "results",
                                "mlflow_run_id")}


def score(job: JobContext, _: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full profiles at D, then the incremental refresh at L: only shoppers with events since D."""
    full = score_profiles(job.spark, job.store, job.config, evaluation_day(job))
    refresh = score_profiles(job.spark, job.store, job.config, latest_day(job), incremental=True)
    return {"full": full, "incremental": refresh}


def uses(job: JobContext, _: dict[str, Any] | None = None) -> dict[str, Any]:
    latest = latest_day(job)
    return {"audiences": build_audiences(job.spark, job.store, job.config, latest),
            "similar_users": build_similar_users(job.spark, job.store, job.config, latest),
            "demand_backtest": forecast_demand(job.spark, job.store, job.config, evaluation_day(job), "test_users"),
            "demand_forecast": forecast_demand(job.spark, job.store, job.config, latest)}


def _ratios(report: dict[str, Any]) -> str:
    def label(h: dict[str, Any]) -> str:
        return h["task"] + (" (sampled)" if "sampled" in h["protocol"] or "negatives" in h["protocol"] else "")

    return ", ".join(f"{label(h)} {h['ratio']:.2f}x" for h in report["headline"] if h["ratio"] is not None)


# Each step gets the job and the reports of the steps run before it.
STEPS: list[tuple[str, Callable[[JobContext, dict[str, Any]], dict[str, Any]], Callable[[dict[str, Any]], str]]] = [
    ("smoke", lambda job, _: run_smoke(job.spark, job.store), lambda r: f"{r['rows']:,} rows round-tripped"),
    ("ingest", lambda job, _: ingest_source(job.spark, job.store, job.config, job.args.source, path=job.args.path),
     lambda r: "events: {input_rows:,} in = {accepted_rows:,} accepted + {quarantined_rows:,} quarantined + "
               "{duplicate_rows:,} duplicates".format(**r["entities"]["events"])),
    ("features", lambda job, _: build_snapshot(job.spark, job.store, job.config, latest_day(job)),
     lambda r: f"snapshot {r['as_of']}: {r['active_users']:,} shoppers, 5 tables"),
    ("training_set", build_training_snapshot,
     lambda r: "snapshot {as_of} (examples as of {dates}): {splits}, {items:,} items".format(
         dates=", ".join(r["training_set"]["example_dates"]), **r["training_set"])),
    ("train", train, lambda r: f"model v{r['model_version']} (champion: {r['champion']}), "
                               f"val NDCG@10 {r['metrics'].get('val_full_ndcg@10', 0):.4f}"),
    ("evaluate", evaluate, lambda r: f"{r['test_users']} test users, {r['holdout'].split(':')[0]}; "
                                     f"model / best traditional: {_ratios(r)}"),
    ("score", score, lambda r: f"{r['full']['profiles']:,} profiles at {r['full']['as_of']} in {r['full']['seconds']}s; "
                               f"refresh at {r['incremental']['as_of']}: {r['incremental']['rescored']:,} re-scored "
                               f"({100 * r['incremental']['rescored_share']:.0f}%) in {r['incremental']['seconds']}s"),
    ("explain", lambda job, _: explain_snapshot(job.spark, job.store, job.config, latest_day(job)),
     lambda r: "{rows:,} rows; deletion test (top vs random events, logit drop): interest {a:.3f} vs {b:.3f}, "
               "intent {c:.3f} vs {d:.3f}".format(
                   rows=r["rows"], a=r["faithfulness"]["top_interest"]["drop_top_events"],
                   b=r["faithfulness"]["top_interest"]["drop_random_events"],
                   c=r["faithfulness"]["purchase_intent"]["drop_top_events"],
                   d=r["faithfulness"]["purchase_intent"]["drop_random_events"])),
    ("audiences", uses, lambda r: "sizes {sizes}; similar users {rows:,} rows; demand WAPE profiles {w1} vs last "
                                  "window {w2} ({n:,} held-out shoppers at {d})".format(
                                      sizes=r["audiences"]["sizes"], rows=r["similar_users"]["rows"],
                                      w1=_fmt(r["demand_backtest"]["wape_profiles"]),
                                      w2=_fmt(r["demand_backtest"]["wape_naive_last_window"]),
                                      n=r["demand_backtest"]["users"], d=r["demand_backtest"]["as_of"])),
]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def closing_summary(job: JobContext, report: dict[str, Any]) -> str:
    from shopper_profiles.profiles.views import analyst_tables

    versions = {name: job.store.version(spec) for name, spec in analyst_tables().items() if job.store.exists(spec)}
    lines = ["", f"pipeline done in {report['seconds']:.0f}s; lakehouse {job.config.lakehouse_root}",
             "table versions: " + ", ".join(f"{k} v{v}" for k, v in sorted(versions.items()))]
    if "evaluate" in report:
        lines.append("model vs best traditional profile: " + _ratios(report["evaluate"]))
    lines += ["where to look:",
              f"  {'make mlflow-ui ENV=' + job.config.env:<32} (http://127.0.0.1:5000: runs, registry, plots; "
              f"store {job.config.mlflow_tracking_uri})",
              f"  {'make sql':<32} (profiles, audiences, k-suppressed views)",
              f"  {'notebooks/profiles_tour.ipynb':<32} (interests, intent vs churn, segments, explanations)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--steps", help="comma-separated subset of: " + ", ".join(name for name, _, _ in STEPS))
    parser.add_argument("--source", default="simulator", choices=SOURCES,
                        help="data to run on (default: the simulator); a real source reads its file from data.dir "
                             "and its period from bronze -- give it its own lakehouse (--conf-override lakehouse.root=...)")
    parser.add_argument("--path", help="input file of a real source (default: data.dir/<its file>)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON at the end")
    job = start_job(parser, argv)
    wanted = set(job.args.steps.split(",")) if job.args.steps else {name for name, _, _ in STEPS}
    unknown = wanted - {name for name, _, _ in STEPS}
    if unknown:
        raise ValueError(f"--steps: unknown step(s) {sorted(unknown)}; choose from {[n for n, _, _ in STEPS]}")
    report: dict[str, Any] = {}
    started = time.time()
    chosen = [s for s in STEPS if s[0] in wanted]
    for number, (name, step, summary) in enumerate(chosen, 1):
        step_started = time.time()
        logger.info("[%d/%d] %s ...", number, len(chosen), name)
        report[name] = step(job, report)
        report[name]["seconds"] = round(time.time() - step_started, 1)
        logger.info("[%d/%d] %s done in %.0fs: %s", number, len(chosen), name, report[name]["seconds"], summary(report[name]))
    report["seconds"] = round(time.time() - started, 1)
    print(closing_summary(job, report))
    if job.args.json:
        print(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    cli(main)
