"""Real-data adapters on slices of the files in ../shared/data, with exact expected counts
(worked out independently with the csv module: see the numbers' comments)."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from shopper_profiles.config import load_config
from shopper_profiles.ingest.bronze import EVENTS, ITEMS, QUARANTINE, USERS
from shopper_profiles.ingest.load import Ingestion
from shopper_profiles.ingest.sources import land_source
from shopper_profiles.storage import open_store

DATA = Path(load_config("local").data_dir)


def _slice(src: Path, dst: Path, lines: int) -> Path:
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt") as handle, open(dst, "w") as out:
        out.writelines(itertools.islice(handle, lines))
    return dst


@pytest.fixture()
def env(spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SHOPPER_PSEUDONYM_KEY", "adapter-test")
    config = load_config("local", [f"lakehouse.root={tmp_path / 'lh'}"])
    return config, open_store(spark, config)


def test_online_retail_first_3000_lines(spark: SparkSession, env, tmp_path: Path) -> None:
    config, store = env
    path = _slice(DATA / "online_retail.csv.gz", tmp_path / "retail.csv", 3001)  # header + 3000 lines
    batch, window, load_id = land_source(spark, config, "online_retail", path=str(path))
    assert window is None and load_id.startswith("online_retail-full-")
    loads = {x.entity: x for x in Ingestion(spark, store, config, batch, window, load_id).run()}
    events = loads["events"]
    # 1,081 lines have no CustomerID, 7 customer lines carry non-product codes (POST, M, D, C2,
    # DOT), 44 repeat an earlier line exactly, and one is a near duplicate: invoices 536562 and
    # 536564 both hold customer 13468's 8 x 37446 at 1.45 in the same minute.
    # 3000 = 1867 accepted + 1089 quarantined + 44 duplicates.
    assert (events.input_rows, events.accepted_rows, events.quarantined_rows, events.duplicate_rows) == (3000, 1867, 1089, 44)
    rules = dict(store.read(QUARANTINE).where("entity = 'events'").groupBy("rule").count().collect())
    assert rules == {"missing_user_id": 1081, "non_product_code": 7, "near_duplicate": 1}
    bronze = store.read(EVENTS)
    types = dict(bronze.groupBy("event_type").count().collect())
    assert types["return"] > 0 and types["return"] + types["purchase"] == 1867
    assert bronze.where("quantity <= 0").count() == 0  # cancellations are returns of a positive amount
    # 94 customers with their country; 1,299 stock codes of which 5 are non-product codes.
    assert (loads["users"].input_rows, loads["users"].accepted_rows) == (94, 94)
    assert store.read(USERS).where(F.col("country").isNull()).count() == 0
    assert (loads["items"].input_rows, loads["items"].accepted_rows, loads["items"].quarantined_rows) == (1299, 1294, 5)
    heart = store.read(ITEMS).where("item_id = '85123A'").first()
    assert heart.title == "WHITE HANGING HEART T-LIGHT HOLDER" and heart.price == 2.55


def test_amazon_beauty_first_50_users(spark: SparkSession, env, tmp_path: Path) -> None:
    config, store = env
    path = _slice(DATA / "amazon_beauty.txt", tmp_path / "amazon_beauty.txt", 50)
    (tmp_path / "amazon_beauty_item2attributes.json").write_text((DATA / "amazon_beauty_item2attributes.json").read_text())
    batch, window, load_id = land_source(spark, config, "amazon_beauty", path=str(path))
    loads = {x.entity: x for x in Ingestion(spark, store, config, batch, window, load_id).run()}
    # 50 users, 704 interactions over 613 distinct items, every item with attributes.
    assert (loads["events"].input_rows, loads["events"].accepted_rows, loads["events"].quarantined_rows) == (704, 704, 0)
    assert loads["users"].accepted_rows == 50
    assert loads["items"].accepted_rows == 613
    assert store.read(ITEMS).where(F.size("attributes") > 0).count() == 613
    # Order survives: user 1's sequence is 1 2 3 4 5.
    first = store.read(EVENTS).where(F.col("event_id").startswith("ab-1-")).orderBy("ts").select("item_id").collect()
    assert [r.item_id for r in first] == ["1", "2", "3", "4", "5"]


def test_adapter_rejects_a_foreign_layout(spark: SparkSession, env, tmp_path: Path) -> None:
    config, _store = env
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"not the UCI Online Retail layout, missing columns \['InvoiceNo'"):
        land_source(spark, config, "online_retail", path=str(path))
