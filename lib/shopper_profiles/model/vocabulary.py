"""The item vocabulary of one training snapshot, as the model sees it: token index -> item id,
title and top category. It is versioned with the snapshot (``gold/item_vocab`` partition D),
fingerprinted, and logged with the model, so scoring can prove it tokenises with the vocabulary
the model was trained on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopper_profiles.model.dataset import FIRST_ITEM, VOCAB
from shopper_profiles.storage import DeltaStore


@dataclass(frozen=True)
class Vocabulary:
    """Driver-side copy (one row per catalogue item: bounded by the catalogue, not by users)."""

    snapshot: date
    item_ids: tuple[str | None, ...]  # by token index; None for pad, mask and gaps
    titles: tuple[str | None, ...]
    item_category: np.ndarray  # token index -> category index, -1 unknown
    categories: tuple[str, ...]  # by category index

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def fingerprint(self) -> str:
        """sha256 over (index, item id, category) and the category list: equal iff tokenisation is."""
        digest = hashlib.sha256(json.dumps(self.categories).encode())
        for idx, item in enumerate(self.item_ids):
            if item is not None:
                digest.update(f"{idx}\t{item}\t{int(self.item_category[idx])}\n".encode())
        return digest.hexdigest()[:16]

    def frame(self, spark: object) -> DataFrame:
        """item_id, item_idx, category_idx as a Spark frame (for joins that tokenise events)."""
        rows = [(item, idx, int(self.item_category[idx]) if self.item_category[idx] >= 0 else None)
                for idx, item in enumerate(self.item_ids) if item is not None]
        return spark.createDataFrame(rows, "item_id string, item_idx int, category_idx int")  # type: ignore[attr-defined]

    def to_json(self) -> str:
        return json.dumps({"snapshot": str(self.snapshot), "fingerprint": self.fingerprint, "categories": list(self.categories),
                           "item_ids": list(self.item_ids), "item_category": self.item_category.tolist()})

    @classmethod
    def load(cls, store: DeltaStore, as_of: date) -> Vocabulary:
        if not store.exists(VOCAB):
            raise ValueError(f"no item vocabulary yet; run jobs/build_training_set.py --as-of {as_of} first")
        rows = store.read(VOCAB).where(F.col("snapshot_date") == F.lit(as_of)).select(
            "item_id", "item_idx", "title", "category", "category_idx").collect()
        if not rows:
            raise ValueError(f"gold/item_vocab has no vocabulary for snapshot {as_of}; "
                             f"run jobs/build_training_set.py --as-of {as_of} first")
        n_items = max(r["item_idx"] for r in rows) + 1
        item_ids: list[str | None] = [None] * n_items
        titles: list[str | None] = [None] * n_items
        item_category = np.full(n_items, -1, dtype=np.int64)
        names: dict[int, str] = {}
        for r in rows:
            item_ids[r["item_idx"]], titles[r["item_idx"]] = r["item_id"], r["title"]
            if r["category_idx"] is not None:
                item_category[r["item_idx"]] = r["category_idx"]
                names[r["category_idx"]] = r["category"]
        categories = tuple(names[i] for i in sorted(names)) or ("unknown",)
        if n_items <= FIRST_ITEM:
            raise ValueError(f"the vocabulary of {as_of} holds no items; ingest events or items first")
        return cls(as_of, tuple(item_ids), tuple(titles), item_category, categories)
