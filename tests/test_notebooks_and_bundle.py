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


def _bundle() -> tuple[dict, dict[str, dict], dict[str, Path]]:
    """databricks.yml, every resource it includes (kind -> name -> spec) and the file each came from."""
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    resources: dict[str, dict] = {}
    origin: dict[str, Path] = {}
    for pattern in bundle.get("include", []):
        for path in sorted(ROOT.glob(pattern)):
            for kind, items in yaml.safe_load(path.read_text())["resources"].items():
                for name, spec in items.items():
                    assert name not in resources.setdefault(kind, {}), f"{kind}.{name} declared twice"
                    resources[kind][name] = spec
                    origin[name] = path
    return bundle, resources, origin


def test_every_bundle_resource_passes_the_databricks_typed_models() -> None:
    """PyPI `databricks-bundles` (the Python models of the bundle schema) rejects unknown fields,
    bad enums and wrong types; every job, experiment and registered model must load."""
    from databricks.bundles.experiments import MlflowExperiment
    from databricks.bundles.jobs import Job
    from databricks.bundles.registered_models import RegisteredModel

    _, resources, _ = _bundle()
    assert set(resources["jobs"]) == {"daily_features", "daily_scoring", "weekly_training", "weekly_upkeep", "erase_users"}
    for spec in resources["jobs"].values():
        Job.from_dict(spec)
    for spec in resources["experiments"].values():
        MlflowExperiment.from_dict(spec)
    for spec in resources["registered_models"].values():
        RegisteredModel.from_dict(spec)
    with pytest.raises(Exception, match="Unexpected field 'pyhton_file'"):  # the models do reject a typo
        Job.from_dict({"name": "x", "tasks": [{"task_key": "a", "spark_python_task": {"pyhton_file": "x.py"}}]})


def test_bundle_references_files_steps_and_targets_all_exist() -> None:
    """What the typed models do not check: clusters and upstream tasks named by a task exist, every
    python_file exists and has main(argv), every task runs with --env ${bundle.target}, steps and job
    parameters exist, every variable is declared and set by every target, and each target's
    conf/<target>.yaml names the experiment and registered model the bundle creates."""
    import re

    from shopper_profiles.config import load_config

    bundle, resources, origin = _bundle()
    variables = bundle["variables"]
    run_pipeline = (ROOT / "jobs" / "run_pipeline.py").read_text()
    steps = set(re.findall(r'^    \("(\w+)", ', run_pipeline, re.M))
    assert {"ingest", "features", "training_set", "train", "evaluate", "score", "explain", "audiences"} <= steps
    text = (ROOT / "databricks.yml").read_text() + "".join(p.read_text() for p in set(origin.values()))
    assert set(re.findall(r"\$\{var\.(\w+)\}", text)) <= set(variables), "a ${var.X} is not declared"
    for name, job in resources["jobs"].items():
        clusters = {c["job_cluster_key"] for c in job.get("job_clusters", [])}
        keys = [t["task_key"] for t in job["tasks"]]
        parameters = {p["name"] for p in job.get("parameters", [])}
        for task in job["tasks"]:
            assert task["job_cluster_key"] in clusters, (name, task["task_key"])
            for upstream in task.get("depends_on", []):
                assert upstream["task_key"] in keys[:keys.index(task["task_key"])], (name, task["task_key"], upstream)
            python_file = (origin[name].parent / task["spark_python_task"]["python_file"]).resolve()
            assert python_file.is_file() and "def main(argv" in python_file.read_text(), python_file
            args = task["spark_python_task"]["parameters"]
            assert args[args.index("--env") + 1] == "${bundle.target}", (name, task["task_key"])
            if "--steps" in args:
                assert set(args[args.index("--steps") + 1].split(",")) <= steps, args
            assert set(re.findall(r"\{\{job\.parameters\.(\w+)\}\}", " ".join(args))) <= parameters, args
            assert [lib["whl"] for lib in task["libraries"]] == ["../dist/*.whl"]
    targets = bundle["targets"]
    assert set(targets) == {"dev", "staging", "prod"}
    assert targets["dev"]["mode"] == "development" and targets["prod"]["mode"] == "production"
    assert targets["prod"]["run_as"] and targets["prod"]["workspace"]["root_path"]
    for target, settings in targets.items():
        given = {**{k: v.get("default") for k, v in variables.items()}, **settings.get("variables", {})}
        assert all(value is not None for value in given.values()), f"target {target} leaves a variable unset"
        config = load_config(target)  # conf/<target>.yaml exists and validates
        assert config.mlflow.experiment == given["experiment_name"], target
        assert config.mlflow.registered_model == f"{given['catalog']}.{given['schema']}.{given['registered_model']}", target
        assert config.lakehouse.engine == "spark-delta", target
