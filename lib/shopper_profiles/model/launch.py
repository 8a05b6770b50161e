"""Start the Horovod worker: `horovodrun` (Gloo) on one machine, `horovod.spark.run` on a cluster."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

from shopper_profiles import import_root
from shopper_profiles.model.train import PROGRESS

logger = logging.getLogger(__name__)


def library_path() -> str:
    """PYTHONPATH for worker processes: this library's import root first, then the caller's own."""
    return os.pathsep.join(filter(None, [str(import_root()), os.environ.get("PYTHONPATH")]))


def run_horovodrun(params: dict[str, Any], num_proc: int, timeout_s: int = 3600) -> list[dict[str, Any]]:
    """`horovodrun -np N -H localhost:N --gloo python -m shopper_profiles.model.train`; rank results back."""
    with tempfile.TemporaryDirectory(prefix="hvd-") as work:
        params = dict(params, result_dir=work)
        params_file = Path(work) / "params.json"
        params_file.write_text(json.dumps(params))
        # `horovodrun` is `python -m horovod.runner.launch`: run through this interpreter, whose
        # environment need not have the script on its PATH (spark-submit's PYSPARK_PYTHON).
        command = [sys.executable, "-m", "horovod.runner.launch", "-np", str(num_proc), "-H", f"localhost:{num_proc}",
                   "--gloo", sys.executable, "-m", "shopper_profiles.model.train", "--params", str(params_file)]
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS=str(
            params.get("threads_per_rank", 1)), PYTHONPATH=library_path())
        logger.info("launching %s", " ".join(command))
        tail: deque[str] = deque(maxlen=200)
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
            timer = threading.Timer(timeout_s, process.kill)
            timer.start()
            try:
                assert process.stdout is not None
                for line in process.stdout:  # relay rank 0's epoch lines as they come
                    tail.append(line.rstrip())
                    if PROGRESS in line:
                        logger.info("training %s", line.split(PROGRESS, 1)[1].strip())
                returncode = process.wait()
            finally:
                timer.cancel()
        if returncode != 0:
            raise RuntimeError(f"horovodrun failed with exit code {returncode} (killed after {timeout_s}s if negative):\n"
                               + "\n".join(tail))
        return [json.loads((Path(work) / f"rank{r}.json").read_text()) for r in range(num_proc)]


def run_horovod_spark(params: dict[str, Any], num_proc: int) -> list[dict[str, Any]]:
    """The same worker on Spark executors (cluster launcher); results come back per rank."""
    import horovod.spark

    from shopper_profiles.model.train import train_worker

    return list(horovod.spark.run(train_worker, args=(params,), num_proc=num_proc, use_gloo=True))
