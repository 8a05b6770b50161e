"""The one sequence encoder: a causal transformers ``TFBertModel`` over item tokens, shared by the
profile model (``network.build_model``) and the public-benchmark model (``sequential``).

Each position reads one item embedding from a table that is also the next-item output layer (tied),
optionally plus the mean of the item's attribute embeddings, a time-bucket embedding and an action
type (BERT's token types). Sequences are left-padded and position ids are aligned to the right, so
the latest event always sits at the last position id whatever a batch's length (batches trimmed of
their all-padding columns cost less and mean the same). The loss is the full softmax over every
item at every position whose next token is a real item.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# Adam moves a weight by about the learning rate per step; a handful of input weights (the rules'
# signals) must travel to O(1-10) within a few epochs, so they are stored divided by this scale.
WIDE_SCALE = 30.0


@dataclass(frozen=True)
class EncoderSpec:
    n_items: int  # table rows, padding (0) included
    max_len: int
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.5
    causal: bool = True  # each position sees only its past, so every position learns the next item
    n_types: int = 1  # action types + 1 (0: padding); 1 = no action types
    time_buckets: int = 0  # time-bucket embeddings (0: none)
    # Multiply item embeddings by sqrt(hidden) (SASRec's scale for randomly initialised tables);
    # off where the table starts from title embeddings already at the initialiser's scale.
    scale_items: bool = True
    # Absolute position embeddings; False: none (every position id 0), so a causal position's state
    # depends only on the items before it, wherever the window puts them.
    positions: bool = True


def build_encoder(spec: EncoderSpec, item_init: np.ndarray | None = None, attributes: np.ndarray | None = None,
                  n_attributes: int = 0, name: str = "encoder") -> Any:
    """A keras layer: ``encoder(items, types, times, training)`` -> hidden states [batch, length, hidden].
    ``attributes`` [n_items, k] holds attribute ids + 1 per item (0 none)."""
    import tensorflow as tf
    import tf_keras as keras
    from transformers import BertConfig, TFBertModel

    config = BertConfig(
        vocab_size=4, hidden_size=spec.hidden_size, num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        intermediate_size=4 * spec.hidden_size, max_position_embeddings=spec.max_len, type_vocab_size=spec.n_types,
        hidden_dropout_prob=spec.dropout, attention_probs_dropout_prob=spec.dropout, is_decoder=spec.causal,
        hidden_act="gelu", initializer_range=0.02,
    )

    class SequenceEncoder(keras.layers.Layer):
        def __init__(self) -> None:
            super().__init__(name=name)
            init = (keras.initializers.Constant(item_init) if item_init is not None
                    else keras.initializers.TruncatedNormal(stddev=0.02))
            self.item_embedding = self.add_weight(name="item_embedding", shape=(spec.n_items, spec.hidden_size),
                                                  initializer=init, trainable=True)
            self.attributes = tf.constant(attributes) if attributes is not None else None
            self.attribute_embedding = (self.add_weight(name="attribute_embedding", shape=(n_attributes, spec.hidden_size),
                                                        initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                                                        trainable=True) if attributes is not None else None)
            self.time_embedding = (keras.layers.Embedding(spec.time_buckets + 1, spec.hidden_size, name="time_embedding")
                                   if spec.time_buckets else None)
            self.bert = TFBertModel(config, name="bert")

        def used_variables(self) -> list[Any]:
            """The trainable variables a forward pass uses: BERT's word embeddings (we feed
            ``inputs_embeds``) and its pooler (we read the hidden states) get no gradient."""
            unused = ("word_embeddings", "pooler")
            return [v for v in self.trainable_variables if not any(part in v.name for part in unused)]

        def item_table(self) -> Any:
            """[n_items, hidden]: what an item is, at the input and at the output (tied)."""
            if self.attributes is None:
                return self.item_embedding
            vectors = tf.gather(self.attribute_embedding, self.attributes)  # [items, attrs, hidden]
            present = tf.cast(self.attributes > 0, tf.float32)[:, :, None]
            mean = tf.reduce_sum(vectors * present, 1) / tf.maximum(tf.reduce_sum(present, 1), 1.0)
            return self.item_embedding + mean

        def token_embeddings(self, items: Any, times: Any = None, table: Any = None) -> Any:
            """What BERT reads per position (explanations interpolate these)."""
            embeds = tf.gather(self.item_table() if table is None else table, items)
            if spec.scale_items:
                embeds = embeds * (spec.hidden_size ** 0.5)
            if self.time_embedding is not None and times is not None:
                embeds = embeds + self.time_embedding(times)
            return embeds

        def call(self, items: Any, types: Any = None, times: Any = None, training: bool = False, embeds: Any = None,
                 table: Any = None) -> Any:
            length = tf.shape(items)[1]
            positions = (tf.range(spec.max_len - length, spec.max_len)[None, :] + tf.zeros_like(items) if spec.positions
                         else tf.zeros_like(items))
            bert_inputs = {"inputs_embeds": self.token_embeddings(items, times, table) if embeds is None else embeds,
                           "attention_mask": tf.cast(tf.not_equal(items, 0), tf.int32), "position_ids": positions}
            if types is not None:
                bert_inputs["token_type_ids"] = types
            return self.bert(bert_inputs, training=training).last_hidden_state

    encoder = SequenceEncoder()
    dummy = tf.ones((1, spec.max_len), tf.int32)
    encoder(dummy, dummy if spec.n_types > 1 else None, dummy if spec.time_buckets else None)
    return encoder


def recent_items(items: Any, depth: int = 3) -> Any:
    """[batch, length, depth]: at each position its item and the ``depth - 1`` before it (latest first, 0 none)."""
    import tensorflow as tf

    def back(steps: int) -> Any:
        return tf.pad(items, [[0, 0], [steps, 0]])[:, :tf.shape(items)[1]]

    return tf.stack([back(step) for step in range(depth)], axis=-1)


def follower_cells(recent: Any, neighbour_items: Any, neighbour_weights: Any, targets: Any = None,
                   window: int | None = None) -> tuple[Any, Any]:
    """Co-occurrence as an input: for rows of ``recent`` [rows, n] (latest item first, 0 none), the
    (row, item) cells of those items' top followers and their log1p counts weighted 1, 1/2, 1/3, ...
    (the co-occurrence baseline's sum), to add onto [rows, n_items] logits with ``tf.tensor_scatter_nd_add``
    (repeated cells add up). With training ``targets``, a follower that is the row's own target counts
    one occurrence less where the counts saw this very pair (the recent item within ``window`` steps
    before the target; None: every recent item): the pair being predicted must not be its own evidence."""
    import tensorflow as tf

    follow = tf.gather(neighbour_items, recent)  # [rows, n, K]
    strength = tf.gather(neighbour_weights, recent)
    if targets is not None:
        own = tf.equal(follow, tf.cast(targets, follow.dtype)[:, None, None])
        if window is not None:
            own &= (tf.range(recent.shape[-1]) < window)[None, :, None]
        strength = tf.where(own, tf.math.log1p(tf.maximum(tf.math.expm1(strength) - 1.0, 0.0)), strength)
    decay = 1.0 / tf.range(1, recent.shape[-1] + 1, dtype=tf.float32)
    strength *= decay[None, :, None] * tf.cast(recent > 0, tf.float32)[:, :, None]
    rows = tf.broadcast_to(tf.range(tf.shape(recent)[0])[:, None, None], tf.shape(follow))
    cells = tf.stack([tf.reshape(rows, [-1]), tf.reshape(tf.cast(follow, tf.int32), [-1])], axis=1)
    return cells, tf.reshape(strength, [-1])


def add_followers(logits: Any, recent: Any, neighbour_items: Any, neighbour_weights: Any, weight: Any,
                  targets: Any = None, window: int | None = None) -> Any:
    """``logits`` [rows, n_items] plus ``weight`` (one for all rows, or [rows]) x the co-occurrence
    strength of every item after the rows' ``recent`` items (see :func:`follower_cells`): the one way
    both models take co-occurrence in."""
    import tensorflow as tf

    cells, values = follower_cells(recent, neighbour_items, neighbour_weights, targets, window)
    weight = tf.convert_to_tensor(weight, values.dtype)
    if weight.shape.rank == 1:  # a weight per row: each row owns the same number of cells
        values = tf.reshape(tf.reshape(values, [tf.shape(recent)[0], -1]) * weight[:, None], [-1])
    else:
        values = weight * values
    return tf.tensor_scatter_nd_add(logits, cells, values)


def seen_cells(items: Any, present: Any, targets: Any) -> Any:
    """(row, item) cells of the items at or before each ``present`` position of ``items`` [batch,
    length] (rows in ``tf.boolean_mask`` order), the row's own ``targets`` aside: what a shopper has
    already had, which the leave-one-out protocol never ranks."""
    import tensorflow as tf

    length = tf.shape(items)[1]
    before = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)  # [position, q]: q <= position
    prefixes = tf.boolean_mask(tf.where(before[None], items[:, None, :], 0), present)  # [rows, length]
    keep = tf.where((prefixes > 0) & (prefixes != tf.cast(targets, prefixes.dtype)[:, None]))
    return tf.stack([keep[:, 0], tf.cast(tf.gather_nd(prefixes, keep), tf.int64)], axis=1)


def next_item_loss(hidden: Any, targets: Any, present: Any, item_table: Any, item_bias: Any = None,
                   followers: Sequence[tuple[Any, Any, Any, Any, int]] = (), masked: bool = True,
                   seen: Any = None) -> Any:
    """Mean full-softmax cross-entropy over every item of the ``targets`` at the ``present``
    positions of ``hidden``. ``masked``: only those positions reach the softmax (cheaper); else
    every position does and the absent ones weigh 0 -- the same value with static shapes, which
    per-example gradients (``tf.vectorized_map``, DP-SGD) need. Each of ``followers`` = (recent items
    [batch, length, depth], neighbour items, neighbour weights, weight, counting window) adds a
    co-occurrence input (see :func:`add_followers`).
    ``seen`` (the input items [batch, length]; ``masked`` only): the items at or before a position are
    no candidates for its target, as the evaluation ranks only what the shopper has not had."""
    import tensorflow as tf

    if seen is not None and not masked:
        raise ValueError("seen items can only be excluded with masked=True")
    if masked:
        rows, kept = tf.boolean_mask(hidden, present), tf.boolean_mask(targets, present)
        recent_rows = [tf.boolean_mask(f[0], present) for f in followers]
        weights = None
    else:
        rows = tf.reshape(hidden, [-1, tf.shape(hidden)[-1]])
        kept = tf.maximum(tf.reshape(targets, [-1]), 0)
        recent_rows = [tf.reshape(f[0], [-1, tf.shape(f[0])[-1]]) for f in followers]
        weights = tf.cast(tf.reshape(present, [-1]), tf.float32)
    logits = tf.matmul(rows, item_table, transpose_b=True)
    if item_bias is not None:
        logits += item_bias
    for recent, (_, neighbour_items, neighbour_weights, weight, window) in zip(recent_rows, followers, strict=True):
        logits = add_followers(logits, recent, neighbour_items, neighbour_weights, weight, kept, window)
    if seen is not None:
        cells = seen_cells(seen, present, kept)
        logits = tf.tensor_scatter_nd_update(logits, cells, tf.fill(tf.shape(cells)[:1], tf.constant(-1e9, logits.dtype)))
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(kept, logits)
    if weights is None:
        return tf.reduce_sum(losses) / tf.maximum(tf.cast(tf.size(losses), tf.float32), 1.0)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def sequence_loss(hidden: Any, item_seq: Any, item_table: Any, item_bias: Any = None, first_item: int = 1,
                  masked: bool = True) -> Any:
    """Causal next-item loss at every history position (the history is the densest label a
    shopper gives); tokens below ``first_item`` (padding, mask, item-less events) are no targets."""
    targets = item_seq[:, 1:]
    return next_item_loss(hidden[:, :-1, :], targets, targets >= first_item, item_table, item_bias, masked=masked)
