"""Pseudonymisation at the edge: raw user ids become keyed HMAC-SHA256 pseudonyms before
anything reaches bronze. The key never appears in a query plan or a log line."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from shopper_profiles.config import Config

logger = logging.getLogger(__name__)

PSEUDONYM_PREFIX = "u_"


def pseudonym(key: bytes, source: str, raw_user_id: str) -> str:
    """The pseudonym of one raw id (namespaced by source so two sources never collide)."""
    digest = hmac.new(key, f"{source}\x1f{raw_user_id}".encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:32]


def load_key(spark: SparkSession, config: Config) -> bytes:
    """Key from the environment variable, else the Databricks secret scope, else (local only) a
    key generated once under the lakehouse root, with a warning."""
    value = os.environ.get(config.privacy.pseudonym_key_env)
    if value:
        return value.encode()
    if config.privacy.secret_scope and config.privacy.secret_key:
        try:
            from pyspark.dbutils import DBUtils  # Databricks only

            return str(DBUtils(spark).secrets.get(config.privacy.secret_scope, config.privacy.secret_key)).encode()
        except ImportError as e:
            raise ValueError(
                f"privacy.secret_scope={config.privacy.secret_scope!r} needs Databricks dbutils; elsewhere set "
                f"{config.privacy.pseudonym_key_env}"
            ) from e
    root = config.lakehouse_root
    if "://" in root or root.startswith("dbfs:"):
        raise ValueError(
            f"no pseudonymisation key: set {config.privacy.pseudonym_key_env} or privacy.secret_scope/secret_key"
        )
    key_file = Path(root) / "_secrets" / "pseudonym.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.parent.chmod(0o700)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        logger.warning(
            "generated a local pseudonymisation key at %s; set %s (or a secret scope) for shared environments",
            key_file, config.privacy.pseudonym_key_env,
        )
    return key_file.read_text().strip().encode()


def pseudonymise(raw_user_id: Column, source: Column, key: bytes) -> Column:
    """Vectorised HMAC over a column; the key travels in the UDF closure, not in the plan."""

    @F.pandas_udf("string")  # type: ignore[call-overload]
    def _hmac(raw: pd.Series, src: pd.Series) -> pd.Series:
        return pd.Series([None if r is None else pseudonym(key, s, r) for r, s in zip(raw, src, strict=True)])

    return _hmac(raw_user_id, source)


def id_map(raw_ids: DataFrame, source: str, key: bytes) -> DataFrame:
    """Distinct ``raw_user_id`` -> ``user_id`` for one source (small: one row per user)."""
    distinct = raw_ids.select("raw_user_id").where(F.col("raw_user_id").isNotNull()).distinct()
    return distinct.select(
        pseudonymise(F.col("raw_user_id"), F.lit(source), key).alias("user_id"),
        "raw_user_id",
        F.lit(source).alias("source"),
    )
