"""One session-scoped local Spark and a fresh lakehouse per test module."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
# Spark settings for test-sized data (the file says which and why); every JVM of the run reads
# them, spark-submit children included. The product itself keeps Spark's defaults.
os.environ.setdefault("SPARK_CONF_DIR", str(Path(__file__).resolve().parent / "spark_conf"))

from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from shopper_profiles.config import Config, load_config  # noqa: E402
from shopper_profiles.storage import DeltaStore, open_store  # noqa: E402

DELTA_PACKAGE = "io.delta:delta-spark_2.12:3.3.2"
REPO = Path(__file__).resolve().parents[1]


LONGEST_FILES = ("test_pipeline.py", "test_training.py", "test_simulator.py", "test_profiles.py", "test_faults.py")
"""Run first in a serial run (``PYTEST_ARGS=-n0``). Under ``make test``'s two workers xdist orders the
files by their number of tests instead, which interleaves these with light files; keeping this
order there (``--no-loadscope-reorder``, session 24) started the two heaviest fixtures together
and made the suite slower."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--storage-engine",
        default="delta-rs",
        choices=["delta-rs", "spark-delta"],
        help="engine for the storage contract tests; spark-delta needs the Delta jars "
        f"(Maven access for {DELTA_PACKAGE}, or SHOPPER_DELTA_JARS=comma-separated jar paths)",
    )


@pytest.fixture(scope="session")
def storage_engine(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--storage-engine"))


@pytest.fixture(scope="session")
def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lakehouse-session")


@pytest.fixture(scope="session")
def spark(session_root: Path, storage_engine: str) -> Iterator[SparkSession]:
    from shopper_profiles.spark import build_spark

    conf = [f"lakehouse.root={session_root}", "spark.master=local[2]", "spark.shuffle_partitions=2",
            "spark.driver_memory=3g"]
    if storage_engine == "spark-delta":
        jars = os.environ.get("SHOPPER_DELTA_JARS")
        extra = {
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        }
        extra["spark.jars" if jars else "spark.jars.packages"] = jars or DELTA_PACKAGE
        config = load_config("local", conf)
        config = config.model_copy(update={"spark": config.spark.model_copy(update={"conf": extra})})
    else:
        config = load_config("local", conf)
    session = build_spark(config)
    yield session
    session.stop()


@pytest.fixture()
def config(tmp_path: Path, storage_engine: str) -> Config:
    """A config whose lakehouse is this test's own temp folder."""
    return load_config(
        "local",
        [f"lakehouse.root={tmp_path / 'lakehouse'}", f"lakehouse.engine={storage_engine}",
         "spark.shuffle_partitions=2"],
    )


@pytest.fixture()
def store(spark: SparkSession, config: Config) -> DeltaStore:
    return open_store(spark, config)


def assert_rows_equal(actual: DataFrame | list, expected: list[tuple], columns: list[str] | None = None) -> None:
    """Compare rows ignoring order; show both sides on failure."""
    if isinstance(actual, DataFrame):
        frame = actual.select(*columns) if columns else actual
        rows = [tuple(r) for r in frame.collect()]
    else:
        rows = [tuple(r) for r in actual]
    key = lambda r: tuple((v is None, str(v)) for v in r)  # noqa: E731 - sort with None safely
    got, want = sorted(rows, key=key), sorted(expected, key=key)
    assert got == want, "rows differ\n  actual:   " + "\n            ".join(map(str, got)) + \
        "\n  expected: " + "\n            ".join(map(str, want))


def run_job(name: str, argv: list[str]):
    """Run ``jobs/<name>.py``'s ``main(argv)`` in this process, as Airflow or a test would."""
    import importlib.util

    path = REPO / "jobs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"jobs_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def simulated_lakehouse(spark: SparkSession, root: Path, **simulator: object) -> tuple[Config, DeltaStore]:
    """A config + store on ``root`` with a small simulator (``users=..., days=...`` overrides)."""
    overrides = [f"lakehouse.root={root}"] + [f"simulator.{k}={v}" for k, v in simulator.items()]
    config = load_config("local", overrides)
    return config, open_store(spark, config)


def ingest_simulator(spark: SparkSession, config: Config, store: DeltaStore, start=None, end=None):
    """Land and ingest the simulator for [start, end) (default: its whole period); the loads back."""
    from shopper_profiles.ingest.load import Ingestion
    from shopper_profiles.ingest.sources import land_source

    batch, window, load_id = land_source(spark, config, "simulator", start, end)
    return batch, Ingestion(spark, store, config, batch, window, load_id).run()


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library as ``make wheel`` builds it, into a temp folder."""
    import subprocess

    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True)
    (built,) = out.glob("shopper_profiles-*.whl")
    return built


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An interpreter with every dependency but not the library: a venv that reaches the project
    venv's site-packages through a plain path entry, so the editable install there (a .pth file)
    is never processed and ``import shopper_profiles`` only works from a shipped wheel."""
    import subprocess
    import sysconfig

    folder = tmp_path_factory.mktemp("bare-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "project-stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([str(python), "-c", "import pyspark, tensorflow, mlflow; import shopper_profiles"],
                           capture_output=True, text=True)
    assert "No module named 'shopper_profiles'" in probe.stderr, probe.stderr[-2000:]
    return python


def spark_submit(job: str, wheel: Path, python: Path, argv: list[str], env: dict[str, str]) -> tuple[dict, str]:
    """``spark-submit --master local[2] --py-files <wheel> jobs/<job>.py <argv>`` with ``python`` as
    driver and executor interpreter, run from the checkout (conf/ is read from the current folder,
    as the README says); the job's JSON report (its last stdout line) and its log (Spark's
    PythonRunner merges the driver's stderr into stdout, so the log is both streams)."""
    import json
    import subprocess

    command = [str(Path(sys.executable).with_name("spark-submit")), "--master", "local[2]", "--driver-memory", "2g",
               "--driver-java-options", f"-Dlog4j2.configurationFile=file:{REPO / 'conf' / 'log4j2.properties'}",
               "--py-files", str(wheel), f"jobs/{job}.py", *argv]
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    environment.update(PYSPARK_PYTHON=str(python), PYSPARK_DRIVER_PYTHON=str(python), TF_USE_LEGACY_KERAS="1",
                       HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **env)
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"spark-submit {job} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout + done.stderr
