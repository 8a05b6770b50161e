"""Petastorm -> tf.data: each Horovod rank streams only its own shard of the training table's
live files (``cur_shard=rank, shard_count=size``), so no rank sees another's rows in an epoch."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

BATCH_COLUMNS = ("user_id", "split", "item_seq", "type_seq", "time_seq", "tabular", "next_item", "window_items", "next_categories",
                 "purchase_next", "churn_next", "price_next", "age_label", "gender_label")


def file_urls(paths: Sequence[str]) -> list[str]:
    return [p if "://" in p else f"file://{p}" for p in paths]


def read_shard(paths: Sequence[str], rank: int = 0, size: int = 1, split: str | None = None,
               columns: Sequence[str] = BATCH_COLUMNS) -> Iterator[dict[str, np.ndarray]]:
    """Row batches of one shard as dense numpy arrays (list columns stacked), optionally one split."""
    from petastorm import make_batch_reader

    with make_batch_reader(file_urls(paths), cur_shard=rank, shard_count=size, num_epochs=1,
                           schema_fields=list(columns), reader_pool_type="thread", workers_count=2,
                           shuffle_row_groups=False) as reader:
        for batch in reader:
            data = batch._asdict()
            keep = np.ones(len(data["user_id"]), dtype=bool) if split is None else data["split"] == split
            if not keep.any():
                continue
            out: dict[str, np.ndarray] = {}
            for name, values in data.items():
                values = values[keep]
                if values.dtype == object and len(values) and isinstance(values[0], np.ndarray | list):
                    values = np.stack([np.asarray(v) for v in values])
                out[name] = values
            yield out


def load_shard(paths: Sequence[str], rank: int = 0, size: int = 1, split: str | None = None,
               share: float = 1.0) -> dict[str, np.ndarray]:
    """The whole shard in memory (training sets here are small per rank; streaming keeps the
    reader honest about sharding and cleans up its own pool). ``share`` < 1 keeps that share of the
    shoppers, chosen by a hash of their id (the same rows whatever order the row groups arrive in)."""
    parts = list(read_shard(paths, rank, size, split))
    if share < 1.0:
        parts = [{k: v[keep] for k, v in p.items()} for p in parts
                 if (keep := np.array([zlib.crc32(str(u).encode()) < share * 2**32 for u in p["user_id"]], bool)).any()]
    if not parts:
        return {}
    data = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    # The reader's thread pool returns row groups in any order: sort, so a seed fixes the batches.
    order = np.argsort(data["user_id"], kind="stable")
    return {name: values[order] for name, values in data.items()}


SEQUENCE_INPUTS = ("item_seq", "type_seq", "time_seq")


def model_inputs(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    """The model's four inputs in the dtypes it was built with (token ids int32, tabular float32)."""
    features = {k: np.asarray(arrays[k]).astype(np.int32) for k in SEQUENCE_INPUTS}
    features["tabular"] = np.asarray(arrays["tabular"]).astype(np.float32)
    return features


def training_stream(arrays: dict[str, Any], batch_size: int, seed: int, first_epoch: int, epochs: int,
                    steps_per_epoch: int) -> Any:
    """Every remaining epoch's batches as one tf.data pipeline, built once: epoch ``e`` is
    ``steps_per_epoch`` full batches of the rows shuffled with seed ``seed + e`` (repeated if an
    epoch needs more rows than the shard holds), so a run resumed at epoch ``e`` sees exactly the
    batches an uninterrupted run would.

    Full batches only: every Horovod rank must run the same traced step with the same shapes, or
    a retrace on one rank renames its collective ops and the allreduce waits forever (seen here
    with a short last batch). Building the pipeline once matters too: re-creating it per epoch
    cost 0.0-18 s of set-up per epoch here (measured), more than some epochs' compute.
    """
    import tensorflow as tf

    examples = _examples(arrays)
    rows = len(arrays["item_seq"])

    def epoch(e: Any) -> Any:
        shuffled = examples.shuffle(rows, seed=tf.cast(seed, tf.int64) + e, reshuffle_each_iteration=True)
        return shuffled.repeat().batch(batch_size, drop_remainder=True).take(steps_per_epoch)

    return tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch).prefetch(2)


def validation_batches(arrays: dict[str, Any], batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """(features, labels) of ``arrays`` in order, ``batch_size`` rows at a time (the last may be short)."""
    if not arrays or not len(arrays["item_seq"]):
        return
    features, labels = model_inputs(arrays), _labels(arrays)
    for start in range(0, len(features["item_seq"]), batch_size):
        yield ({k: v[start:start + batch_size] for k, v in features.items()},
               {k: v[start:start + batch_size] for k, v in labels.items()})


def _labels(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        "next_item": arrays["next_item"].astype(np.int32),
        "window_items": arrays["window_items"].astype(np.int32),
        "next_categories": arrays["next_categories"].astype(np.float32),
        "purchase_next": arrays["purchase_next"].astype(np.float32),
        "churn_next": arrays["churn_next"].astype(np.float32),
        "price_next": np.nan_to_num(arrays["price_next"].astype(np.float32), nan=-1.0),
        "age_label": arrays["age_label"].astype(np.int32),
        "gender_label": arrays["gender_label"].astype(np.int32),
    }


def _examples(arrays: dict[str, Any]) -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((model_inputs(arrays), _labels(arrays)))
