"""The jobs as users run them: ingestion, feature backfill and `make run`'s pipeline, end to end."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from conftest import REPO, run_job, spark_submit
from pyspark.sql import SparkSession

SMALL = ["simulator.users=120", "simulator.days=20", "simulator.items_per_leaf=10", "model.hidden_size=16", "model.layers=1",
         "model.max_len=20", "model.batch_size=16", "model.epochs=2", "model.text_init=false",
         "model.training_snapshots=1"]


def overrides(root) -> list[str]:
    out = ["--conf-override", f"lakehouse.root={root}"]
    for item in SMALL:
        out += ["--conf-override", item]
    return out


@pytest.fixture(scope="module")
def whole(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    """`make run`'s pipeline on a small shop, once for the module: (lakehouse root, its report)."""
    previous_key = os.environ.get("SHOPPER_PSEUDONYM_KEY")
    os.environ["SHOPPER_PSEUDONYM_KEY"] = "pipeline"
    root = tmp_path_factory.mktemp("whole") / "lh"
    yield root, run_job("run_pipeline", overrides(root))
    if previous_key is None:
        os.environ.pop("SHOPPER_PSEUDONYM_KEY", None)
    else:
        os.environ["SHOPPER_PSEUDONYM_KEY"] = previous_key


@pytest.mark.slow
def test_whole_pipeline_then_a_backfill_and_a_rescore_through_spark_submit(spark: SparkSession, monkeypatch, whole, wheel,
                                                                         bare_python) -> None:
    """The whole pipeline's report, a feature backfill of two earlier days into its lakehouse, then
    its profiles scored again through the real `spark-submit` with an interpreter that has only the
    shipped wheel (see conftest's ``bare_python``): the model runs in the executors' Python workers,
    which can only import the library from that wheel. (Ingest, features, scoring and audiences run
    wheel-only under spark-submit in the Airflow test below.)"""
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "pipeline")
    from deltalake import DeltaTable

    whole_root, whole = whole
    assert whole["smoke"]["rows"] == 10_000
    assert whole["ingest"]["balanced"]
    assert whole["features"]["as_of"] == "2024-01-21" and whole["features"]["active_users"] > 100
    sequences = DeltaTable(str(whole_root / "silver" / "behaviour_sequences")).to_pyarrow_table(
        filters=[("snapshot_date", "=", date(2024, 1, 21))])  # the training snapshot (01-07) is there too
    assert sequences.num_rows == whole["features"]["active_users"]
    assert max(sequences.column("sequence_length").to_pylist()) <= 50
    # The training snapshot is the horizon (14 days) before the latest one: its labels are observed.
    assert whole["training_set"]["training_set"]["as_of"] == "2024-01-07"
    assert whole["train"]["champion"] is True and whole["train"]["model_version"] == "1"
    assert whole["evaluate"]["model_version"] == "1" and whole["evaluate"]["rows"] > 50
    # [5/7]: profiles at D (full) and at the latest day (incremental), explanations, audiences, neighbours, demand.
    assert whole["score"]["full"]["as_of"] == "2024-01-07" and whole["score"]["full"]["mode"] == "full"
    refresh = whole["score"]["incremental"]
    assert refresh["mode"] == "incremental" and refresh["profiles"] == whole["features"]["active_users"]
    assert 0 < refresh["rescored"] <= refresh["profiles"]
    assert whole["explain"]["rows"] > 0 and whole["explain"]["faithfulness"]["users"] >= 0
    assert set(whole["audiences"]["audiences"]["sizes"]) >= {"churn_risk_high_spenders", "loyal_full_price"}
    assert whole["audiences"]["similar_users"]["rows"] == 10 * refresh["profiles"]
    assert whole["audiences"]["demand_backtest"]["observed"] is True
    snapshots = run_job("build_features", ["--backfill", "2024-01-11", "2024-01-12", *overrides(whole_root)])
    assert [s["as_of"] for s in snapshots] == ["2024-01-11", "2024-01-12"]
    assert all(s["active_users"] > 50 for s in snapshots)
    behaviour = DeltaTable(str(whole_root / "silver" / "features_behaviour"))
    dates = {str(d) for d in behaviour.to_pyarrow_table(columns=["snapshot_date"]).column("snapshot_date").to_pylist()}
    assert {"2024-01-07", "2024-01-11", "2024-01-12", "2024-01-21"} <= dates
    rescored, log = spark_submit("score_profiles", wheel, bare_python,
                                 ["--as-of", "2024-01-21", "--env", "local", *overrides(whole_root)], {})
    assert f"shopper_profiles from {wheel}" in log  # the driver imported the wheel, not the checkout
    assert f"shipped {wheel.name} to the executors' Python path" in log
    profiles = rescored["profiles"]
    assert profiles["mode"] == "full" and profiles["profiles"] == profiles["rescored"] == refresh["profiles"]
    table = DeltaTable(str(whole_root / "gold" / "profiles")).to_pyarrow_table(filters=[("as_of", "=", date(2024, 1, 21))])
    assert table.num_rows == refresh["profiles"] and set(table.column("model_version").to_pylist()) == {"1"}


CHROMIUM = os.environ.get("SHOPPER_CHROMIUM", "/usr/bin/chromium")


@contextmanager
def mlflow_ui(root: Path) -> Iterator[str]:
    """`make mlflow-ui`'s server (``python -m shopper_profiles.model.ui``) on a free port: its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "shopper_profiles.model.ui", "--env", "local", *overrides(root),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            assert server.poll() is None, f"the MLflow UI exited:\n{server.communicate()[0][-3000:]}"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the MLflow UI did not answer /health within 60 s")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def shown_image(page, name: str) -> list[int]:
    """Click an artifact in the run's Artifacts tab; the [width, height] of the image its preview
    loaded (a new ``blob:`` image: the UI fetched the artifact's bytes and the browser decoded them)."""
    fresh = """seen => [...document.querySelectorAll('img')].find(
        i => i.src.startsWith('blob:') && !seen.includes(i.src) && i.complete && i.naturalWidth > 0)"""
    seen = page.eval_on_selector_all("img", "all => all.map(i => i.src)")
    page.get_by_text(name, exact=True).first.click()
    page.wait_for_function(f"seen => Boolean(({fresh})(seen))", arg=seen, timeout=60_000)
    return page.evaluate(f"seen => {{ const i = ({fresh})(seen); return [i.naturalWidth, i.naturalHeight]; }}", seen)


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_champion_and_its_plots(whole) -> None:
    """In a real browser (Playwright driving Debian's chromium): the registered model's page shows
    the champion alias; its version page links to the training run, whose artifacts preview the
    training curve and the validation plots, and names the evaluation run, whose headline plot
    previews too."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: `apt-get install -y --no-install-recommends chromium` "
                    "(scripts/bootstrap.sh does it when run as root), or set SHOPPER_CHROMIUM")
    root, _ = whole
    with mlflow_ui(root) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{base}/#/models/shopper_profile_model")
        version_row = page.get_by_role("row").filter(has_text="Version 1")
        version_row.get_by_text("champion").wait_for()
        version_row.get_by_role("link", name="Version 1").click()

        page.get_by_text("Source Run").wait_for()
        page.get_by_text(re.compile(r"^evaluation_\d{4}-\d\d-\d\d$")).first.wait_for()  # the evaluation run's tag
        body = page.inner_text("body")
        evaluation_run = re.search(r"evaluation_\d{4}-\d\d-\d\d\s*:?\s*([0-9a-f]{32})", body)
        assert evaluation_run, body[-1500:]
        source = page.locator("a[href*='/runs/']").first
        experiment = re.search(r"/experiments/([^/]+)/runs/", source.get_attribute("href") or "")
        assert experiment
        source.click()
        page.get_by_role("tab", name="Artifacts").click()
        assert shown_image(page, "training_curve.png")[0] > 100
        page.get_by_text("validation", exact=True).first.click()
        assert shown_image(page, "calibration.png")[0] > 100

        page.goto(f"{base}/#/experiments/{experiment.group(1)}/runs/{evaluation_run.group(1)}/artifacts")
        assert shown_image(page, "evaluation.png")[0] > 100
        browser.close()


AIRFLOW_DAGS = REPO / "resources" / "airflow"
DAG_REPORT = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {d.dag_id: {
    "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in d.tasks},
    "operator": {t.task_id: type(t).__name__ for t in d.tasks},
    "retries": {t.task_id: t.retries for t in d.tasks},
    "timeout_s": {t.task_id: t.execution_timeout.total_seconds() for t in d.tasks},
    "target": {t.task_id: getattr(t, "application", None) or getattr(t, "job_name", None) for t in d.tasks},
    "interval": d.timetable.__class__.__name__} for d in bag.dags.values()}}))
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Airflow's own venv (scripts/airflow_venv.sh: cached per machine) and an environment with
    sqlite metadata in a fresh AIRFLOW_HOME, the repo's DAG folder and a local[2] Spark connection."""
    made = subprocess.run(["bash", str(REPO / "scripts" / "airflow_venv.sh")], capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    venv = Path(made.stdout.strip().splitlines()[-1])
    home = tmp_path_factory.mktemp("airflow")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SHOPPER_", "PYSPARK", "PYTHONPATH"))}
    environment.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(AIRFLOW_DAGS),
                       AIRFLOW__CORE__LOAD_EXAMPLES="False", SHOPPER_HOME=str(REPO), SHOPPER_ENV="local",
                       AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[2]"}',
                       PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # spark-submit of the project's pyspark
    migrated = subprocess.run([str(venv / "bin" / "airflow"), "db", "migrate"], env=environment, capture_output=True,
                              text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    return venv, environment


def dag_report(venv: Path, environment: dict[str, str], orchestrator: str) -> dict:
    import json

    done = subprocess.run([str(venv / "bin" / "python"), "-c", DAG_REPORT, str(AIRFLOW_DAGS)], capture_output=True, text=True,
                          env={**environment, "SHOPPER_ORCHESTRATOR": orchestrator}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_airflow_dags_load_and_the_daily_one_runs_through_spark_submit(whole, wheel, airflow, bare_python) -> None:
    """The DAGs in Airflow's own venv: no import errors, the expected task graphs with retries and
    timeouts, for both the spark-submit and the Databricks (run-now of the bundle's jobs) branch;
    then `airflow dags test` runs the daily DAG's spark-submit branch (ingest -> features -> score
    -> audiences) on the whole pipeline's lakehouse for the interval [2024-01-20, 2024-01-21), with an
    interpreter that has only the shipped wheel."""
    import yaml
    from deltalake import DeltaTable

    venv, environment = airflow
    submit = dag_report(venv, environment, "spark_submit")
    assert submit["errors"] == {}
    daily, weekly = submit["dags"]["shopper_profiles_daily"], submit["dags"]["shopper_profiles_weekly"]
    assert daily["downstream"] == {"ingest": ["features"], "features": ["score"], "score": ["audiences"], "audiences": []}
    assert weekly["downstream"] == {"training_set": ["train"], "train": ["evaluate"], "evaluate": []}
    for dag in (daily, weekly):
        assert set(dag["operator"].values()) == {"SparkSubmitOperator"} and dag["interval"] == "CronDataIntervalTimetable"
        assert set(dag["retries"].values()) == {2} and all(t > 0 for t in dag["timeout_s"].values())
        assert all(Path(application).is_file() for application in dag["target"].values())
    databricks = dag_report(venv, environment, "databricks")
    assert databricks["errors"] == {}
    bundle = yaml.safe_load((REPO / "resources" / "jobs.yml").read_text())["resources"]["jobs"]
    deployed = {job["name"].replace("${bundle.target}", "local") for job in bundle.values()}
    assert databricks["dags"]["shopper_profiles_daily"]["downstream"] == {"daily_features": ["daily_scoring"], "daily_scoring": []}
    assert databricks["dags"]["shopper_profiles_weekly"]["downstream"] == {"weekly_training": []}
    for dag in databricks["dags"].values():
        assert set(dag["operator"].values()) == {"DatabricksRunNowOperator"} and set(dag["target"].values()) <= deployed

    root, _ = whole
    before = {t: DeltaTable(str(root / "gold" / t)).version() for t in ("profiles", "audience_sizes")}
    environment = {**environment, "SHOPPER_WHEEL": str(wheel), "SHOPPER_PYTHON": str(bare_python), "SHOPPER_RETRIES": "0",
                   "SHOPPER_PSEUDONYM_KEY": "pipeline", "SHOPPER_CONF_OVERRIDES": ",".join(
                       [f"lakehouse.root={root}", *SMALL])}
    ran = subprocess.run([str(venv / "bin" / "airflow"), "dags", "test", "shopper_profiles_daily", "2024-01-21T02:00:00+00:00"],
                         env=environment, capture_output=True, text=True, timeout=1200)
    log = ran.stdout + ran.stderr
    assert ran.returncode == 0 and "state=success" in log, log[-6000:]
    commands = re.findall(r"Spark-Submit cmd: (.*?) \[airflow", log)
    assert [re.search(r"jobs/(\w+)\.py", c).group(1) for c in commands] == [
        "ingest_events", "build_features", "score_profiles", "build_audiences"]
    assert "--from 2024-01-20 --to 2024-01-21 --env local" in commands[0] and all("--as-of 2024-01-21" in c for c in commands[1:])
    landed = re.search(r"events: input=(\d+) .*\(new=(\d+), already loaded=(\d+)\)", log)
    assert landed and int(landed.group(1)) > 0 and landed.group(2) == "0", log[-6000:]  # the pipeline loaded it already
    assert '"mode": "incremental"' in log
    assert f"shopper_profiles from {wheel}" in log and f"shopper_profiles from {REPO / 'lib'}" not in log  # wheel only
    after = {t: DeltaTable(str(root / "gold" / t)).version() for t in before}
    assert all(after[t] == before[t] + 1 for t in before), (before, after)


@pytest.mark.slow
def test_online_retail_through_the_product_pipeline(spark: SparkSession, tmp_path, monkeypatch) -> None:
    """Real data through the product's own jobs (ingest -> features -> training set -> Horovod
    training -> evaluation), its period read from bronze: every eighth customer of UCI Online Retail
    plus the first lines without a customer (quarantined)."""
    import csv
    import gzip
    from datetime import datetime, timedelta

    from shopper_profiles.config import load_config

    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "pipeline")
    source = load_config("local").data_dir + "/online_retail.csv.gz"
    path, kept, anonymous, last = tmp_path / "retail.csv", 0, 0, datetime.min
    with gzip.open(source, "rt", newline="") as handle, open(path, "w", newline="") as out:
        rows, writer = csv.reader(handle), csv.writer(out)
        writer.writerow(next(rows))
        for row in rows:
            customer = row[6]
            if (customer and int(float(customer)) % 8 == 0) or (not customer and anonymous < 200):
                writer.writerow(row)
                kept += 1
                anonymous += not customer
                if customer:
                    last = max(last, datetime.fromisoformat(row[4]))
    report = run_job("run_pipeline", ["--source", "online_retail", "--path", str(path),
                                      "--steps", "ingest,training_set,train,evaluate", *overrides(tmp_path / "retail")])
    events = report["ingest"]["entities"]["events"]
    assert events["input_rows"] == kept and report["ingest"]["balanced"] and events["quarantined_rows"] >= anonymous
    # The period comes from bronze, not the simulator's calendar: E = the day after the last
    # invoice - 14 days, T = E - 14 days (a time holdout).
    evaluation_day = last.date() + timedelta(days=1) - timedelta(days=14)
    assert report["training_set"]["training_set"]["as_of"] == str(evaluation_day - timedelta(days=14))
    assert set(report["training_set"]["features"]) == {str(evaluation_day - timedelta(days=14)), str(evaluation_day)}
    assert report["evaluate"]["holdout"].startswith("time holdout")
    tasks = {row["task"]: row for row in report["evaluate"]["headline"]}
    # Next-basket recall@20 against repeat buy and co-purchase (Online Retail has no categories to rank by).
    assert tasks["next_basket"]["metric"] == "recall@20" and 0 <= tasks["next_basket"]["profile_model"] <= 1
    assert {"purchase_next_window", "churn_next_window"} <= set(tasks)
    assert not any(task.startswith(("truth_", "planted_")) for task in tasks)  # no planted truth on real data


EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
PHONE = re.compile(r"\+\d[\d\s().-]{7,}\d|\(\d{3}\)\s?\d{3}-\d{4}|\b\d{3}[-.\s]\d{3}[-.\s]\d{4}\b")
PERSONAL_COLUMNS = {"name", "first_name", "last_name", "full_name", "email", "phone", "address", "raw_user_id", "raw_row"}


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.items():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _personal_data(rows: list[dict], columns: list[str], raw_ids: set[str]) -> list[str]:
    """What in these rows is personal: a column named for it, a raw id, an e-mail, a phone number."""
    found = [f"column {c}" for c in columns if c.lower() in PERSONAL_COLUMNS]
    ids = re.compile("|".join(re.escape(r) for r in sorted(raw_ids, key=len, reverse=True))) if raw_ids else None
    for value in {s for row in rows for s in _strings(row)}:
        if (ids and ids.search(value)) or EMAIL.search(value) or PHONE.search(value):
            found.append(value)
    return found


def test_the_privacy_scan_finds_what_it_looks_for() -> None:
    rows = [{"user_id": "u_0123456789abcdef0123456789abcdef", "note": "call +44 20 7946 0958"},
            {"user_id": "u_99", "tags": ["x", "ann@example.com"]}, {"user_id": "sim-0000042", "m": {"k": "(555) 123-4567"}},
            {"detail": '{"user_id":"sim-0000043"}'}]
    assert sorted(_personal_data(rows, ["user_id", "email"], {"sim-0000042", "sim-0000043"})) == sorted(
        ["column email", "call +44 20 7946 0958", "ann@example.com", "sim-0000042", "(555) 123-4567",
         '{"user_id":"sim-0000043"}'])
    assert _personal_data([{"user_id": "u_1234567890123456789012345678abcd", "price": "1234567.89",
                            "day": "2024-01-07 00:00:00"}], ["user_id"], set()) == []


@pytest.mark.slow
def test_no_personal_data_outside_restricted(whole) -> None:
    """Every Delta table outside `restricted/` (bronze, silver, gold: features, training sets,
    profiles, explanations, audiences, neighbours, evaluation) and every analyst view holds no raw
    user id, e-mail or phone number and no column named for personal data; the restricted tables
    are exactly the ones under `restricted/`."""
    from deltalake import DeltaTable
    from shopper_profiles.config import load_config
    from shopper_profiles.profiles.views import analyst_views, register_duckdb
    from shopper_profiles.storage import open_store

    root, _ = whole
    raw_ids = {r["raw_user_id"] for r in DeltaTable(str(root / "restricted/user_id_map")).to_pyarrow_table().to_pylist()}
    assert len(raw_ids) > 100
    tables = sorted(p.parent.relative_to(root) for p in root.rglob("_delta_log"))
    assert len(tables) > 20
    restricted = {str(t) for t in tables if str(t).startswith("restricted/")}
    assert restricted == {"restricted/quarantine", "restricted/user_id_map", "restricted/planted_truth", "restricted/erasures"}
    for table in tables:
        if str(table).startswith("restricted/"):
            continue
        data = DeltaTable(str(root / table)).to_pyarrow_table()
        assert data.num_rows > 0 or str(table) == "_smoke/smoke", f"{table} is empty: the scan would prove nothing"
        assert _personal_data(data.to_pylist(), data.column_names, raw_ids) == [], table
    argv = ["lakehouse.root=" + str(root), *SMALL]
    config = load_config("local", argv)
    from pyspark.sql import SparkSession

    con = register_duckdb(open_store(SparkSession.builder.getOrCreate(), config), config.analyst.min_group_size)
    for view in analyst_views(config.analyst.min_group_size):
        cursor = con.execute(f"SELECT * FROM {view.name}")  # type: ignore[attr-defined]
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, r, strict=True)) for r in cursor.fetchall()]
        assert _personal_data(rows, columns, raw_ids) == [], view.name


def _holders(root: Path, needles: list[str]) -> dict[str, list[str]]:
    """needle -> the files under ``root`` that hold it: every file's raw bytes, and for Parquet files
    also their decoded values (compressed pages can hide a string from a plain byte search)."""
    import pyarrow.parquet as pq

    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        texts = [data]
        if data[:4] == b"PAR1":
            texts.append(str(pq.read_table(path).to_pylist()).encode())
        for needle in needles:
            if any(needle.encode() in text for text in texts):
                found.setdefault(needle, []).append(str(path.relative_to(root)))
    return found


def test_erasure_covers_every_table_that_carries_a_shopper() -> None:
    """A table added with a shopper column but not to erasure's list would keep erased shoppers."""
    import importlib
    import pkgutil

    import shopper_profiles
    from shopper_profiles.config import load_config
    from shopper_profiles.erasure import user_tables
    from shopper_profiles.storage import TableSpec

    config = load_config("local")
    covered = {spec.name: set(columns) for spec, columns in user_tables(config)}
    specs = {spec.name: spec for spec, _ in user_tables(config)}
    for module in pkgutil.walk_packages(shopper_profiles.__path__, "shopper_profiles."):
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, TableSpec):
                specs.setdefault(value.name, value)
    from shopper_profiles.catalog import all_tables
    from shopper_profiles.features.schemas import stats_spec

    specs.setdefault("feature_stats", stats_spec())  # made by a function, not a module constant
    assert {spec.name for spec in all_tables(config)} == set(specs) - {"smoke"}, "catalog.all_tables misses a table"
    shopper_columns = {"user_id", "src_user_id", "dst_user_id", "neighbour_id"}
    for name, spec in specs.items():
        carried = shopper_columns & set(spec.schema.fieldNames())
        if name == "smoke":  # the storage round-trip table: synthetic ids, rebuilt by every smoke run
            continue
        assert carried <= covered.get(name, set()), f"{name} carries {carried} but erasure deletes by {covered.get(name)}"


@pytest.mark.slow
def test_erasure_reaches_every_copy_and_a_later_ingest_refuses_them(spark: SparkSession, whole, tmp_path) -> None:
    """Erase three shoppers of the whole pipeline's lakehouse (events, features, training set,
    model, profiles, explanations, audiences, neighbours, quarantine, landing): afterwards no byte
    under the lakehouse root -- MLflow store included -- holds their raw id or pseudonym, the tables
    still read, the model is tagged for retraining, and ingesting the source again brings none back."""
    from deltalake import DeltaTable
    from mlflow import MlflowClient
    from shopper_profiles.config import load_config

    root, _ = whole
    argv = overrides(root)[:]

    def table(path: str) -> list[dict]:
        return DeltaTable(str(root / path)).to_pyarrow_table().to_pylist()

    to_raw = {r["user_id"]: r["raw_user_id"] for r in table("restricted/user_id_map")}
    quarantined = {(r["raw_row"] or "").split('"user_id":"')[-1].split('"')[0] for r in table("restricted/quarantine")}
    everywhere = (set(to_raw) & {r["user_id"] for r in table("gold/audience_members")}
                  & {r["user_id"] for r in table("gold/training_set")} & {r["src_user_id"] for r in table("bronze/social_edges")})
    first = sorted(u for u in everywhere if to_raw[u] in quarantined)[:1]  # one with a quarantined raw row
    chosen = first + [u for u in sorted(everywhere) if u not in first][:2]
    assert len(chosen) == 3 and first, "the shop should have shoppers present in every table"
    raw = [to_raw[u] for u in chosen]
    before = _holders(root, raw + chosen)
    assert set(before) == set(raw + chosen), "the search must find them before erasure, or it proves nothing"
    assert any(p.startswith("landing/") for p in before[raw[0]]) and any(p.startswith("restricted/quarantine") for p in before[raw[0]])
    events_before = len(table("bronze/events"))

    requests = tmp_path / "erase.txt"
    requests.write_text("\n".join(raw) + "\n")
    report = run_job("erase_users", ["--users", str(requests), "--source", "simulator", *argv])
    assert report["shoppers"] == 3 and report["registered"] == 3
    assert report["deleted_rows"]["events"] > 0 and report["deleted_rows"]["profiles"] > 0
    assert report["deleted_rows"]["quarantine"] > 0 and report["landing_rows"] > 0
    assert report["models_needing_retrain"] == ["1"]
    assert _holders(root, raw + chosen) == {}
    assert len(table("bronze/events")) == events_before - report["deleted_rows"]["events"]
    config = load_config("local", [argv[i + 1] for i in range(0, len(argv), 2)])
    client = MlflowClient(config.mlflow_tracking_uri, config.mlflow_tracking_uri)
    assert client.get_model_version(config.mlflow.registered_model, "1").tags.get("needs_retrain") == "true"

    again = run_job("ingest_events", ["--source", "simulator", *argv])
    assert again["balanced"] and again["entities"]["events"]["new_rows"] == 0
    assert again["refused_erased"]["events"] > 0 and again["refused_erased"]["users"] > 0
    assert again["landing_rows_scrubbed"] > 0
    assert not set(chosen) & {r["user_id"] for r in table("bronze/events")}
    assert _holders(root, raw + chosen) == {}


@pytest.mark.slow
def test_training_runs_through_spark_submit_with_only_the_wheel(whole, wheel, bare_python) -> None:
    """The training job under `spark-submit` with an interpreter that has no library but the
    shipped wheel (last in the module: it registers another version): the driver starts Horovod
    through that interpreter (no `horovodrun` script on its path), the ranks import the library
    from the wheel, and the code fingerprint is read from inside it. The erasure before it rewrote
    the training snapshot into one file, fewer than the two ranks Petastorm shards it over: the
    job spreads it out again instead of failing."""
    root, _ = whole
    report, log = spark_submit("train_profile_model", wheel, bare_python, [
        "--as-of", "2024-01-07", "--epochs", "1", "--env", "local", *overrides(root)], {"SHOPPER_PSEUDONYM_KEY": "pipeline"})
    assert f"launching {bare_python} -m horovod.runner.launch -np 2" in log
    assert "training set 2024-01-07 is in 1 file(s) for 2 ranks; spreading it over 8 again" in log
    trained = report["train"]
    assert trained["model_version"] == "2" and trained["history"] and len(trained["placement"]) == 2
