"""Pseudonymisation at the edge: raw user ids become keyed HMAC-SHA256 pseudonyms before
anything reaches bronze. The key never appears in a query plan or a log line."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from shopper_profiles.config import Config

logger = logging.getLogger(__name__)

PSEUDONYM_PREFIX = "u_"
_ERASURE_DOMAIN = "erased\x1f"


def pseudonym(key: bytes, source: str, raw_user_id: str) -> str:
    """The pseudonym of one raw id (namespaced by source so two sources never collide)."""
    digest = hmac.new(key, f"{source}\x1f{raw_user_id}".encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:32]


def erasure_token(pseudonym_value: str) -> str:
    """What the erasure register keeps of an erased shopper: a hash of the keyed pseudonym under its
    own domain, so the register holds neither the raw id nor the pseudonym that tables carried, yet
    a later ingest (same key) recognises the shopper."""
    return hashlib.sha256((_ERASURE_DOMAIN + pseudonym_value).encode()).hexdigest()


def erasure_token_column(user_id: Column) -> Column:
    """:func:`erasure_token` in Spark (built-in ``sha2``: the JVM never calls back into Python)."""
    return F.sha2(F.concat(F.lit(_ERASURE_DOMAIN), user_id), 256)


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


_BLOCK = 64  # SHA-256's block size in bytes (RFC 2104)


def _pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's inner and outer keys: the key (hashed if longer than a block) zero-padded to a block,
    XORed with 0x36 and 0x5c."""
    block = (hashlib.sha256(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def id_map(raw_ids: DataFrame, source: str, key: bytes) -> DataFrame:
    """Distinct ``raw_user_id`` -> ``user_id`` for one source (small: one row per user).

    HMAC-SHA256 = H((K xor opad) || H((K xor ipad) || m)) written with Spark's own ``sha2``,
    ``unhex`` and ``concat``, so it never leaves the JVM (no Python worker round trip); equal to
    :func:`pseudonym` (tested). The two padded keys ride in a one-row broadcast frame, not as
    literals, so the key is in no query plan."""
    spark = raw_ids.sparkSession
    inner, outer = _pads(key)
    pads = spark.createDataFrame([(bytearray(inner), bytearray(outer))], "_ipad binary, _opad binary")
    message = F.encode(F.concat(F.lit(source), F.lit("\x1f"), F.col("raw_user_id")), "UTF-8")
    digest = F.sha2(F.concat(F.col("_opad"), F.unhex(F.sha2(F.concat(F.col("_ipad"), message), 256))), 256)
    distinct = raw_ids.select("raw_user_id").where(F.col("raw_user_id").isNotNull()).distinct()
    return distinct.crossJoin(F.broadcast(pads)).select(
        F.concat(F.lit(PSEUDONYM_PREFIX), F.substring(digest, 1, 32)).alias("user_id"),
        "raw_user_id",
        F.lit(source).alias("source"),
    )
