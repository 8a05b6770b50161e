"""Airflow DAGs for shopper_profiles ([6/7] deliverable 4).

* ``shopper_profiles_daily`` (01:30 UTC): ingest -> features -> score -> audiences, for the
  run's data interval: ingest lands [start, end), the others work as of ``end``.
* ``shopper_profiles_weekly`` (Sunday 03:00 UTC): training set -> train -> evaluate, with the
  pipeline's own date logic (``jobs/run_pipeline.py --steps X``: training one label horizon
  before the latest evaluable day, as `make run` and the Databricks bundle do).

Two ways to run the same jobs, switched by ``SHOPPER_ORCHESTRATOR``:

* ``spark_submit`` (default; self-managed clusters): ``SparkSubmitOperator`` runs
  ``jobs/<job>.py --env $SHOPPER_ENV`` with the library as a wheel on ``--py-files`` (``make
  wheel``), against the master of the Airflow connection ``$SHOPPER_SPARK_CONN``.
* ``databricks``: ``DatabricksRunNowOperator`` runs the bundle's deployed jobs by name
  (``shopper_profiles_<job>_<target>``, ``databricks bundle deploy -t <target>`` first), the
  target being ``$SHOPPER_ENV``; the bundle's tasks chain their own steps.

Airflow does not co-install with the project's pins (see README, Airflow): this file imports
nothing of shopper_profiles and runs in Airflow's own environment. Settings, read when the DAGs
are parsed (the scheduler's and workers' environment):

    SHOPPER_ENV             --env of every job, or the bundle target (default local)
    SHOPPER_ORCHESTRATOR    spark_submit | databricks
    SHOPPER_HOME            the checkout holding jobs/ and conf/ (default: two folders up)
    SHOPPER_WHEEL           the library wheel (default: the newest $SHOPPER_HOME/dist/*.whl)
    SHOPPER_PYTHON          driver and executor interpreter (default $SHOPPER_HOME/.venv/bin/python)
    SHOPPER_SOURCE          the daily ingest's source (default simulator)
    SHOPPER_SPARK_CONN      Spark connection id (default spark_default)
    SHOPPER_DATABRICKS_CONN Databricks connection id (default databricks_default)
    SHOPPER_RETRIES         retries per task (default 2, 10 minutes apart, doubling)
    SHOPPER_CONF_OVERRIDES  extra ``KEY=VALUE`` config overrides, comma-separated (ad-hoc runs)
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.databricks.operators.databricks import DatabricksRunNowOperator
from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

ENV = os.environ.get("SHOPPER_ENV", "local")
ORCHESTRATOR = os.environ.get("SHOPPER_ORCHESTRATOR", "spark_submit")
HOME = Path(os.environ.get("SHOPPER_HOME", Path(__file__).resolve().parents[2]))
PYTHON = os.environ.get("SHOPPER_PYTHON", str(HOME / ".venv" / "bin" / "python"))
SOURCE = os.environ.get("SHOPPER_SOURCE", "simulator")
OVERRIDES = [x.strip() for x in os.environ.get("SHOPPER_CONF_OVERRIDES", "").split(",") if x.strip()]
if ORCHESTRATOR not in ("spark_submit", "databricks"):
    raise ValueError(f"SHOPPER_ORCHESTRATOR={ORCHESTRATOR!r}: use spark_submit (self-managed Spark) or databricks (the bundle's jobs)")

START = "{{ data_interval_start | ds }}"
END = "{{ data_interval_end | ds }}"

DEFAULT_ARGS = {
    "owner": "shopper_profiles",
    "retries": int(os.environ.get("SHOPPER_RETRIES", "2")),
    "retry_delay": timedelta(minutes=10),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=2),
}

# (task, job file, its arguments, timeout): the daily chain, then the weekly one.
DAILY = [
    ("ingest", "ingest_events", ["--source", SOURCE, "--from", START, "--to", END], timedelta(hours=2)),
    ("features", "build_features", ["--as-of", END], timedelta(hours=2)),
    ("score", "score_profiles", ["--as-of", END, "--incremental"], timedelta(hours=2)),
    ("audiences", "build_audiences", ["--as-of", END], timedelta(hours=1)),
]
WEEKLY = [
    ("training_set", "run_pipeline", ["--steps", "training_set"], timedelta(hours=3)),
    ("train", "run_pipeline", ["--steps", "train"], timedelta(hours=8)),
    ("evaluate", "run_pipeline", ["--steps", "evaluate"], timedelta(hours=2)),
]
# The Databricks alternative: the bundle's jobs (resources/jobs.yml) that hold the same steps.
BUNDLE_JOBS = {"daily": ["daily_features", "daily_scoring"], "weekly": ["weekly_training"]}


def _wheel() -> str:
    if os.environ.get("SHOPPER_WHEEL"):
        return os.environ["SHOPPER_WHEEL"]
    wheels = sorted((HOME / "dist").glob("shopper_profiles-*.whl"), key=lambda p: p.stat().st_mtime)
    # A missing wheel fails the task with this path, not the DAG's import: `make wheel` fixes it.
    return str(wheels[-1]) if wheels else str(HOME / "dist" / "shopper_profiles-0.1.0-py3-none-any.whl")


def spark_submit(task: str, job: str, argv: list[str], timeout: timedelta) -> SparkSubmitOperator:
    overrides = [x for item in OVERRIDES for x in ("--conf-override", item)]
    return SparkSubmitOperator(
        task_id=task,
        application=str(HOME / "jobs" / f"{job}.py"),
        application_args=[*argv, "--env", ENV, *overrides],
        py_files=_wheel(),
        conn_id=os.environ.get("SHOPPER_SPARK_CONN", "spark_default"),
        name=f"shopper_profiles_{task}_{ENV}",
        driver_memory=os.environ.get("SHOPPER_DRIVER_MEMORY", "2g"),
        conf={"spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{HOME / 'conf' / 'log4j2.properties'}"},
        env_vars={"PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON, "SHOPPER_HOME": str(HOME),
                  "SHOPPER_CONF_DIR": str(HOME / "conf"), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
        execution_timeout=timeout,
    )


def run_now(job: str) -> DatabricksRunNowOperator:
    return DatabricksRunNowOperator(
        task_id=job,
        job_name=f"shopper_profiles_{job}_{ENV}",
        databricks_conn_id=os.environ.get("SHOPPER_DATABRICKS_CONN", "databricks_default"),
        execution_timeout=timedelta(hours=10),
    )


def chain(tasks: list) -> None:
    for upstream, downstream in zip(tasks, tasks[1:], strict=False):
        upstream >> downstream


for name, schedule, steps in (("daily", "30 1 * * *", DAILY), ("weekly", "0 3 * * 0", WEEKLY)):
    with DAG(
        dag_id=f"shopper_profiles_{name}",
        description=f"shopper_profiles {name} ({ORCHESTRATOR}, --env {ENV})",
        # Data intervals (not Airflow 3's default trigger timetable, whose interval is empty): a
        # run at 01:30 on day D ingests [D - 1, D) and builds everything as of D.
        schedule=CronDataIntervalTimetable(schedule, timezone="UTC"),
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["shopper_profiles", ENV, ORCHESTRATOR],
    ) as dag:
        if ORCHESTRATOR == "spark_submit":
            chain([spark_submit(*step) for step in steps])
        else:
            chain([run_now(job) for job in BUNDLE_JOBS[name]])
    globals()[dag.dag_id] = dag
