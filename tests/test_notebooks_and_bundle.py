"""Notebooks execute top to bottom; the Databricks bundle points at real job files."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def _execute(notebook: Path, overrides: list[str], tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(notebook, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += f"\nconf_overrides = {overrides!r}"
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


@pytest.mark.slow
def test_lakehouse_tour_notebook_runs(tmp_path: Path) -> None:
    nb = _execute(ROOT / "notebooks" / "lakehouse_tour.ipynb",
                  [f"lakehouse.root={tmp_path / 'lh'}", "spark.master=local[1]", "spark.driver_memory=1g"], tmp_path)
    outputs = "".join(str(o.get("data", {}).get("text/plain", "")) for c in nb.cells for o in c.get("outputs", []))
    assert "'rows': 1000" in outputs
    assert "MERGE" in outputs


def test_bundle_tasks_run_existing_jobs_with_the_target_env() -> None:
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    assert set(bundle["targets"]) == {"dev", "prod"}
    tasks = [t for job in bundle["resources"]["jobs"].values() for t in job["tasks"]]
    assert tasks
    for task in tasks:
        python_file = ROOT / task["spark_python_task"]["python_file"]
        assert python_file.is_file(), python_file
        params = task["spark_python_task"]["parameters"]
        assert params[params.index("--env") + 1] == "${bundle.target}"
        assert "def main(argv" in python_file.read_text()
