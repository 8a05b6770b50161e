"""A shop's own item sequences as a public sequence file (``user item item ...``, the S3-Rec format),
so the public next-item benchmark (jobs/benchmark_sequences.py) and any published code can run on
this shop's data: does what holds on Amazon Beauty hold here too?"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from shopper_profiles.features import events_before
from shopper_profiles.features.sequences import first_touch_sequences, numbered_sequences
from shopper_profiles.ingest.bronze import EVENTS
from shopper_profiles.storage import DeltaStore

logger = logging.getLogger(__name__)


def export_sequences(store: DeltaStore, out: str, event_types: Sequence[str], min_count: int,
                     until: date | None = None) -> dict[str, Any]:
    """Write the ``min_count``-core first-touch sequences of bronze events (before ``until``, if
    given) to ``out``, and beside it ``<out>.items.csv`` (item index -> the shop's item id). Shoppers
    are numbered 1.. in pseudonym order: no id of any kind leaves the lakehouse."""
    events = store.read(EVENTS)
    if until is not None:
        events = events_before(events, until)
    sequences = first_touch_sequences(events, event_types, min_count).localCheckpoint()
    lines, items = numbered_sequences(sequences)
    if not sequences.take(1):
        raise ValueError(f"no shopper has {min_count} distinct items of types {list(event_types)}; lower "
                         "--min-count or pick other --event-types (bronze holds: "
                         + ", ".join(r["event_type"] for r in events.select("event_type").distinct().collect()) + ")")
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    users = interactions = 0
    with target.open("w") as handle:
        for row in lines.orderBy("user_index").toLocalIterator():
            handle.write(row["line"] + "\n")
            users += 1
            interactions += row["line"].count(" ")
    n_items = 0
    with Path(f"{out}.items.csv").open("w") as handle:
        handle.write("item_index,item_id\n")
        for row in items.orderBy("item_index").toLocalIterator():
            handle.write(f"{row['item_index']},{row['item_id']}\n")
            n_items += 1
    report = {"path": str(target), "users": users, "items": n_items, "interactions": interactions,
              "event_types": list(event_types), "min_count": min_count, "until": until}
    logger.info("exported %d shoppers, %d items, %d interactions to %s", users, n_items, interactions, target)
    return report
