"""The MLflow UI over this environment's tracking store (runs, the registry, the plots), bound to
127.0.0.1 with one worker: a local sqlite store is one file, and a laptop's UI has no business
listening on other interfaces. ``make mlflow-ui`` runs it.

    python -m shopper_profiles.model.ui --env local [--port 5000]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shopper_profiles.config import Config, config_from_args
from shopper_profiles.runtime import cli, job_parser

HOST = "127.0.0.1"


def ui_command(config: Config, port: int) -> list[str]:
    """``mlflow ui`` for the environment's store; refuses stores it cannot serve locally."""
    uri = config.mlflow_tracking_uri
    if not uri.startswith("sqlite:///"):
        raise ValueError(f"mlflow.tracking_uri is {uri!r}: that store has its own UI (on Databricks: the workspace's "
                         "Experiments and Models pages); make mlflow-ui serves a local sqlite store (--env local)")
    database = Path(uri[len("sqlite:///"):])
    if not database.exists():
        raise FileNotFoundError(f"no MLflow store at {database} yet: run `make run` (or jobs/train_profile_model.py) first")
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow), "ui", "--backend-store-uri", uri, "--host", HOST, "--port", str(port), "--workers", "1"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = job_parser(__doc__ or "")
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    args = parser.parse_args(argv)
    command = ui_command(config_from_args(args), args.port)
    print(f"MLflow UI for {command[3]} at http://{HOST}:{args.port} (Ctrl+C stops it)", flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    cli(main)
