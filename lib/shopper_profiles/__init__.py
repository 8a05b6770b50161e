"""shopper_profiles: e-commerce user profiling on a Delta lakehouse."""

from pathlib import Path

__version__ = "0.1.0"


def import_root() -> Path:
    """Where this library is imported from: the checkout's lib/, or under ``spark-submit
    --py-files`` the wheel itself (what a job logs, and what Horovod ranks put on their path)."""
    return Path(__file__).parents[1]
