"""Next-item benchmark on public sequence files (the S3-Rec format: ``user item item ...`` per
line, items in time order), with the standard leave-one-out protocol.

Protocol, as in the S3-Rec paper and code: per user the last item is the test target, the
second-to-last the validation target, everything before is training history. Scores go to
ALL items; the user's own earlier items are removed from the ranking (S3-Rec's
``rating_pred[train_matrix > 0] = 0``); HR@K and NDCG@K for K = 5, 10, 20. A sampled protocol
(target vs 100 uniform negatives the user never touched) is reported beside it, never instead. The
test ratio to item co-occurrence carries a 95 % paired bootstrap interval over the test users
(:func:`versus_cooccurrence`): on a file of a few thousand shoppers a few percent is inside it.

The model is the profile model's own sequence encoder (``encoder.py``): a transformers
``TFBertModel`` with ``is_decoder=True`` (each position sees only its past), item embeddings
tied with the output layer (plus the mean of the item's attribute embeddings), and a full
softmax over every item (the cross-entropy loss that lets SASRec-style models beat their
sampled-loss published numbers), trained with a loss at every position of causal windows over the
training histories. The encoder has no position embeddings here, so a window position's state is
exactly the one the test input's last position would have for the same history (a prefix): each
target is taught from the state the evaluation reads, for one pass per window instead of one per
target, and a step averages over a fixed number of targets either way. ``ensemble`` members, trained from
consecutive seeds inside the one training budget, rank by their mean log-probability: on Amazon
Beauty one seed's test NDCG@10 moves by about +-0.002 with the seed alone, and the mean of three is
both steadier and higher than a typical member; each member's own numbers are reported beside it.
A member still improving at the end of its share trains on (a larger file needs the time more than
a second member does), and a member whose share is shorter than an epoch is not started. The
validation targets then choose the ranking (:func:`choose_ranking`): the k members with the best
validation NDCG@10 of their own, fused at a weight w with one of two item co-occurrence terms
(:data:`FUSION_TERMS`: the co-occurrence baseline's own, or items bought around each other in
either order); the whole ensemble alone, and each term alone as a traditional baseline, are
reported beside it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from shopper_profiles.model.baselines import (
    cooccurrence,
    cooccurrence_scores,
    cooccurrence_sums,
    popularity,
    popularity_scores,
    top_followers,
)
from shopper_profiles.model.encoder import (
    WIDE_SCALE,
    EncoderSpec,
    add_followers,
    build_encoder,
    next_item_loss,
    recent_items,
)
from shopper_profiles.model.metrics import (
    full_ranks,
    history_mask,
    paired_intervals,
    ranking_report,
    ranks_among,
    unseen_negatives,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequenceData:
    users: list[str]
    sequences: list[np.ndarray]  # item ids (>= 1), time order
    n_items: int  # largest item id + 1 (0 is padding)
    skipped_short: int  # users with fewer than 3 items: leave-one-out needs 3
    attributes: np.ndarray | None = None  # [n_items, max_attrs] attribute ids + 1, 0 = none
    n_attributes: int = 0


@dataclass(frozen=True)
class SequentialSpec:
    max_len: int = 50
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.5
    batch_size: int = 256  # next-item targets per step (a prefix holds one, a causal window up to max_len)
    learning_rate: float = 0.001
    minutes: float = 30.0  # training wall-clock budget (evaluation time not included)
    max_epochs: int = 400
    eval_every: int = 2  # epochs between validation passes
    patience: int = 4  # validation passes without improvement before stopping
    seed: int = 42  # member m starts from seed + m
    ensemble: int = 3  # members, trained one after another within ``minutes``; 1 = a single model
    threads: int = 0  # 0: every core
    use_attributes: bool = True
    neighbours: int = 20  # co-occurrence as an input: each item's top followers in the training histories (0: off)
    # Which terms of FUSION_TERMS the network reads as inputs, each with its own learned weight. Both (session 28,
    # validation NDCG@10): Online Retail's file, one member 9 min, alone ~0.089 -> 0.097 but fused with the
    # neighbourhood term 0.1110 -> 0.1116 (the network learns what late fusion already adds); the simulated
    # shop's file, 3 members, fused 0.0671 -> 0.0606 (it overfits sooner). Not taken.
    input_terms: tuple[str, ...] = ("followers",)
    # Causal windows, a loss at every position (True: one example per target, the history before it with
    # its latest item at the last position, as the validation and test inputs are laid out). Without
    # position embeddings every window position reads as that prefix would, for one pass per window.
    prefixes: bool = False
    positions: bool = False  # absolute position embeddings (see EncoderSpec.positions)
    # Items a causal window shares with the one before it (see training_windows); None: half a window, so
    # every target sees at least max_len // 2 items before it where the history has them.
    overlap: int | None = None
    # The training softmax leaves out what the shopper had before the target, as the protocol's ranking does.
    # Off: one member, 10 min, seed 42 -- Online Retail's file validation NDCG@10 0.0878 -> 0.0896, but
    # Beauty 0.0758 -> 0.0741 (it overfits sooner: best epoch 8 instead of 14); no gain across files.
    exclude_seen: bool = False
    # Late fusion: rank by the members' mean log-probability plus w x log1p(the co-occurrence baseline's sums
    # for the same input), w chosen on validation from FUSION_WEIGHTS (0: the model alone); see choose_ranking.
    fusion: bool = True
    ks: tuple[int, ...] = field(default=(5, 10, 20))

    @property
    def window_overlap(self) -> int:
        return self.max_len // 2 if self.overlap is None else self.overlap


def read_sequences(path: str | os.PathLike[str], attributes_path: str | os.PathLike[str] | None = None) -> SequenceData:
    """Read ``user item item ...`` lines; a malformed line fails naming the file and line."""
    users: list[str] = []
    sequences: list[np.ndarray] = []
    skipped = 0
    largest = 0
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                items = np.asarray([int(p) for p in parts[1:]], dtype=np.int32)
            except ValueError:
                raise ValueError(f"{path}:{number}: expected 'user item item ...' with integer item ids, "
                                 f"got {line.strip()[:80]!r}") from None
            if len(items) and items.min() < 1:
                raise ValueError(f"{path}:{number}: item ids must be >= 1 (0 is reserved for padding)")
            if len(items) < 3:
                skipped += 1
                continue
            users.append(parts[0])
            sequences.append(items)
            largest = max(largest, int(items.max()))
    if not sequences:
        raise ValueError(f"{path}: no user with at least 3 items; is this a sequence file (user item item ...)?")
    attributes, n_attributes = None, 0
    if attributes_path:
        raw = json.loads(Path(attributes_path).read_text())
        width = max((len(v) for v in raw.values()), default=0)
        attributes = np.zeros((largest + 1, max(width, 1)), dtype=np.int32)
        for item, values in raw.items():
            if int(item) <= largest:
                attributes[int(item), :len(values)] = np.asarray(values, dtype=np.int32) + 1
        n_attributes = int(attributes.max()) + 1
    return SequenceData(users, sequences, largest + 1, skipped, attributes, n_attributes)


def left_pad(values: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.int32)
    tail = values[-length:]
    if len(tail):
        out[length - len(tail):] = tail
    return out


def training_windows(sequences: list[np.ndarray], max_len: int, overlap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-item targets from each user's training history (all but the last two
    items); histories longer than ``max_len`` are cut into windows so no target is dropped. A window
    shares ``overlap`` items with the one before it, whose targets they are (they are 0 in this one):
    every target is taught once, with at least ``overlap`` items before it where the history has them
    -- without it a window's first targets see almost nothing, where the test input holds up to
    ``max_len`` items."""
    if not 0 <= overlap < max_len:
        raise ValueError(f"overlap must be in [0, max_len={max_len}), got {overlap}")
    inputs, targets = [], []
    for seq in sequences:
        history = seq[:-2]
        if len(history) < 2:
            continue
        end = len(history)
        while end > 1:
            start = max(0, end - max_len - 1)
            window = history[start:end]
            taught = window[1:].copy()
            if start > 0:
                taught[:overlap] = 0  # the next (earlier) window teaches these, with more history
            inputs.append(left_pad(window[:-1], max_len))
            targets.append(left_pad(taught, max_len))
            end = start + 1 + overlap if start > 0 else 0
    return np.stack(inputs), np.stack(targets)


def training_prefixes(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """One example per next-item target of each user's training history (all but the last two items):
    the (at most ``max_len``) items before it, left-padded, so the latest one sits at the last position
    -- where the validation and test inputs put it. With position embeddings causal windows
    (:func:`training_windows`) teach most targets from a position id the evaluation never reads; on
    Amazon Beauty the prefixes then gave one model 0.0614 test NDCG@10 instead of 0.0575 (seed 42).
    Without position embeddings a window teaches the same states (0.0617), and on long histories an
    epoch costs far less (Online Retail, 65 items a shopper: ~22 s of windows; ~140 s of prefixes
    on the 2-core box of session 21). Targets are 0 except in the last column."""
    inputs, targets = [], []
    for seq in sequences:
        history = seq[:-2]
        for end in range(1, len(history)):
            inputs.append(left_pad(history[max(0, end - max_len):end], max_len))
            targets.append(history[end])
    x = np.stack(inputs) if inputs else np.zeros((0, max_len), np.int32)
    y = np.zeros_like(x)
    y[:, -1] = np.asarray(targets, dtype=np.int32)
    return x, y


def evaluation_inputs(sequences: list[np.ndarray], max_len: int, stage: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(inputs, targets, history to exclude) for ``stage`` 'validation' or 'test'."""
    if stage not in ("validation", "test"):
        raise ValueError(f"stage must be 'validation' or 'test', got {stage!r}")
    cut = 2 if stage == "validation" else 1
    histories = [seq[:-cut] for seq in sequences]
    targets = np.asarray([seq[-cut] for seq in sequences], dtype=np.int32)
    return np.stack([left_pad(h, max_len) for h in histories]), targets, histories


class CausalSequenceModel:
    """The shared sequence encoder (``encoder.py``, causal) over item tokens; scores are dot
    products with the item table."""

    def __init__(self, spec: SequentialSpec, n_items: int, attributes: np.ndarray | None, n_attributes: int,
                 neighbours: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        import tensorflow as tf

        self.spec = spec
        self.n_items = n_items
        use = attributes is not None and spec.use_attributes
        self.encoder = build_encoder(
            EncoderSpec(n_items=n_items, max_len=spec.max_len, hidden_size=spec.hidden_size, layers=spec.layers,
                        heads=spec.heads, dropout=spec.dropout, causal=True, positions=spec.positions),
            attributes=attributes if use else None, n_attributes=n_attributes if use else 0)
        # Co-occurrence as an input (as in the profile model): per term of ``spec.input_terms``, a learned
        # weight on its neighbours' strengths, starting at 1 (the baseline's own scale), stored / WIDE_SCALE
        # so Adam moves it.
        self.inputs = [(FUSION_TERMS[term], tf.constant(follow), tf.constant(strength),
                        tf.Variable(1.0 / WIDE_SCALE, name=f"{term}_weight"))
                       for term, (follow, strength) in (neighbours or {}).items()]

    @property
    def variables(self) -> list[Any]:
        return [*self.encoder.used_variables(), *(weight for *_, weight in self.inputs)]

    def followers(self, items: Any) -> list[tuple[Any, Any, Any, Any, int]]:
        """What the loss needs to add the co-occurrence inputs at every position of ``items``."""
        return [(recent_items(items, term.last), follow, strength, weight * WIDE_SCALE, term.window)
                for term, follow, strength, weight in self.inputs]

    def next_scores(self, items: Any, table: Any) -> Any:
        """[batch, n_items]: every item's score as the next one after left-padded ``items``."""
        import tensorflow as tf

        users = self.encode(items, table, training=False)[:, -1, :]
        scores = tf.matmul(users, table, transpose_b=True)
        for term, follow, strength, weight in self.inputs:
            scores = add_followers(scores, recent_items(items, term.last)[:, -1, :], follow, strength, weight * WIDE_SCALE)
        return scores

    def item_table(self) -> Any:
        return self.encoder.item_table()

    def encode(self, items: Any, table: Any, training: bool) -> Any:
        """Hidden states [batch, length, hidden] for left-padded ``items``."""
        return self.encoder(items, training=training, table=table)

    def user_vectors(self, items: Any) -> Any:
        return self.encode(items, self.item_table(), training=False)[:, -1, :]

    def get_weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.variables]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        for variable, value in zip(self.variables, weights, strict=True):
            variable.assign(value)


def _trim(batch: np.ndarray) -> np.ndarray:
    """Drop the all-padding columns on the left: attention and FFN cost follow the longest row."""
    used = int((batch > 0).any(axis=0).argmax()) if (batch > 0).any() else batch.shape[1] - 1
    return batch[:, used:]


def score_users(model: CausalSequenceModel, inputs: np.ndarray, batch: int = 1024) -> np.ndarray:
    """[users, n_items]: the member's next-item log-probabilities (its log-softmax ranks exactly as its
    scores; members' logits differ in scale, their log-probabilities are comparable, so a ranking
    averages these -- see :func:`variant_ranks`)."""
    import tensorflow as tf

    table = model.item_table()
    out = []
    for start in range(0, len(inputs), batch):
        items = tf.constant(_trim(inputs[start:start + batch]))
        out.append(tf.nn.log_softmax(model.next_scores(items, table)).numpy())
    return np.concatenate(out)


FUSION_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
"""Candidate weights of the co-occurrence term in the fused ranking (see :func:`choose_ranking`)."""


@dataclass(frozen=True)
class FusionTerm:
    """An item co-occurrence signal counted on the training histories: b counts for a when it came
    within ``window`` steps after a (``symmetric``: before or after it); a user's evidence sums the
    rows of their ``last`` items, weighted 1, 1/2, 1/3, ... from the latest back."""

    window: int
    symmetric: bool
    last: int

    def matrix(self, data: SequenceData) -> Any:
        return cooccurrence([seq[:-2] for seq in data.sequences], data.n_items, self.window, symmetric=self.symmetric)


FUSION_TERMS = {
    "followers": FusionTerm(window=3, symmetric=False, last=3),  # the item co-occurrence baseline's own sums
    # Items bought around each other in either order, over the latest 10 items: within a basket the
    # order of the items says little, and a basket holds more than three. One file's validation
    # targets (Online Retail's) suggested it; every file chooses between the two on its own.
    "neighbourhood": FusionTerm(window=5, symmetric=True, last=10),
}
"""The co-occurrence terms a fused ranking may add, each also ranked alone as a traditional baseline."""

Variant = tuple[tuple[int, ...], float, str]
"""A ranking from the trained members: (which members' log-probabilities are averaged, the weight w
of the co-occurrence term added to them, which term of :data:`FUSION_TERMS`; w 0 and '': the members
alone)."""


def term_label(variant: Variant) -> str:
    """'w 0' for the members alone, 'w 1.5 followers' for a fused ranking."""
    return f"w {variant[1]:g}" + (f" {variant[2]}" if variant[1] else "")


def cooccurrence_evidence(matrix: Any, histories: Sequence[np.ndarray], last: int = 3, chunk: int = 4096) -> np.ndarray:
    """[users, n_items] float32 log1p of a co-occurrence term's sums for ``histories``: the fused
    ranking's second term, on the log scale of the model's log-probabilities."""
    out = np.empty((len(histories), matrix.shape[0]), dtype=np.float32)
    for start in range(0, len(histories), chunk):
        out[start:start + chunk] = np.log1p(cooccurrence_sums(matrix, histories[start:start + chunk], last))
    return out


Ranks = dict[str, dict[str, np.ndarray]]
"""Per variant (or method), per protocol ('full', 'sampled100'): each user's 0-based rank of the target."""


def variant_ranks(member_scores: Callable[[slice], dict[int, np.ndarray]],
                  evidence: Callable[[slice], dict[str, np.ndarray]] | None,
                  targets: np.ndarray, histories: Sequence[np.ndarray], variants: dict[str, Variant],
                  sampled: bool = True, seed: int = 0, chunk: int = 4096) -> Ranks:
    """Every variant's per-user ranks (full ranking and, with ``sampled``, among 100 sampled negatives)
    from ONE scoring pass: ``member_scores(rows)`` gives each member's log-probabilities for a slice
    of users and ``evidence(rows)`` each co-occurrence term the variants use, once per chunk (bounded memory: a few
    chunk x n_items arrays), and each variant ranks from those arrays. Per-user ranks, not only
    means: the paired bootstrap intervals resample them."""
    fused = any(w for _, w, _ in variants.values())
    if evidence is None and fused:
        raise ValueError("a fused variant (weight > 0) needs the co-occurrence evidence")
    ranks: dict[str, dict[str, list[np.ndarray]]] = {name: {"full": [], "sampled100": []} for name in variants}
    for start in range(0, len(targets), chunk):
        part = slice(start, start + chunk)
        part_targets, part_histories = targets[part], histories[part]
        members = member_scores(part)
        shape = next(iter(members.values())).shape
        terms = evidence(part) if evidence is not None and fused else {}
        rows = np.arange(len(part_targets))
        banned = history_mask(shape[0], shape[1], part_histories)  # the shopper's own earlier items, never the target
        banned[rows, part_targets] = False
        banned[:, 0] = True  # padding is never a recommendation
        negatives = (unseen_negatives(shape[1], part_targets, part_histories, rows + start, 100, seed, 1)
                     if sampled else None)
        for name, (chosen, weight, term) in variants.items():
            scores = members[chosen[0]].copy()  # masked below; the members' arrays serve every variant
            for m in chosen[1:]:
                scores += members[m]
            scores /= len(chosen)
            if weight:
                scores += weight * terms[term]
            scores[banned] = -np.inf
            ranks[name]["full"].append(full_ranks(scores, part_targets))
            if negatives is not None:
                ranks[name]["sampled100"].append(ranks_among(scores, part_targets, negatives))
    return {name: {protocol: np.concatenate(parts) for protocol, parts in by_protocol.items() if parts}
            for name, by_protocol in ranks.items()}


def rank_reports(ranks: Ranks, ks: Sequence[int], prefix: str) -> dict[str, dict[str, float]]:
    """HR@K and NDCG@K of every variant under every protocol, named ``{prefix}{protocol}_{metric}``."""
    return {name: {metric: value for protocol, per_user in by_protocol.items()
                   for metric, value in ranking_report(per_user, ks, prefix=f"{prefix}{protocol}_").items()}
            for name, by_protocol in ranks.items()}


def member_variants(members: Sequence[float], weights: Sequence[float],
                    terms: Sequence[str] = tuple(FUSION_TERMS)) -> dict[str, Variant]:
    """The candidate rankings: the k members with the best validation NDCG@10 of their own
    (``members``), for every k, alone and fused with each term at every weight above 0. Why: three
    members trained in one budget are not equal (the last gets what the first two left), and
    averaging in a weak one can cost the ensemble more than it adds; the k best, not every subset,
    keeps the choice small."""
    order = sorted(range(len(members)), key=lambda m: -members[m])
    out: dict[str, Variant] = {}
    for k in range(1, len(members) + 1):
        chosen = tuple(sorted(order[:k]))
        label = "+".join(str(m) for m in chosen)
        for w in weights:
            for term in (terms if w else ("",)):
                variant = (chosen, float(w), term)
                out[f"{label} {term_label(variant)}"] = variant
    return out


def choose_ranking(ndcg: dict[Variant, float]) -> Variant:
    """The variant with the best validation NDCG@10; on a tie the smaller weight, then the more
    members (the plainer ranking). Why fuse at all: the learned co-occurrence input sees each recent
    item's 20 top followers in log counts; the baseline ranks by whole rows of raw counts, which on a
    file where the next item mostly shares the last one's basket the model does not reproduce. How
    much of each to trust, and which members to average, is the file's to say on its validation
    targets, as the epoch is."""
    return max(ndcg, key=lambda v: (ndcg[v], -v[1], len(v[0])))  # equal keys: the first (followers) term


def evaluate_ranks(models: Sequence[CausalSequenceModel], data: SequenceData, stage: str, sampled: bool = False,
                   seed: int = 0, variants: dict[str, Variant] | None = None, matrices: dict[str, Any] | None = None) -> Ranks:
    """The trained members under the leave-one-out protocol for ``stage`` ('validation' or 'test'):
    every variant's per-user ranks (default: all members averaged, alone), from one scoring pass; a
    variant with a weight needs its term's co-occurrence matrix in ``matrices``."""
    inputs, targets, histories = evaluation_inputs(data.sequences, models[0].spec.max_len, stage)
    variants = variants or {"": (tuple(range(len(models))), 0.0, "")}
    used = sorted({m for chosen, _, _ in variants.values() for m in chosen})
    terms = sorted({term for _, w, term in variants.values() if w})
    missing = set(terms) - set(matrices or {})
    if missing:
        raise ValueError(f"a fused variant needs the co-occurrence matrix of its term(s) {sorted(missing)}")

    def member_scores(part: slice) -> dict[int, np.ndarray]:
        return {m: score_users(models[m], inputs[part]) for m in used}

    def evidence(part: slice) -> dict[str, np.ndarray]:
        assert matrices is not None
        return {t: cooccurrence_evidence(matrices[t], histories[part], FUSION_TERMS[t].last) for t in terms}

    return variant_ranks(member_scores, evidence, targets, histories, variants, sampled, seed)


def evaluate(models: Sequence[CausalSequenceModel], data: SequenceData, stage: str, ks: Sequence[int],
             sampled: bool = False, seed: int = 0, variants: dict[str, Variant] | None = None,
             matrices: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """:func:`evaluate_ranks` as HR/NDCG per variant."""
    return rank_reports(evaluate_ranks(models, data, stage, sampled, seed, variants, matrices), ks, f"{stage}_")


def training_cooccurrence(data: SequenceData) -> dict[str, Any]:
    """Per term of :data:`FUSION_TERMS`, its co-occurrence counted on the training histories (all but
    the last two items): the baselines', the model's followers' ('followers') and the fused terms'
    one source."""
    return {name: term.matrix(data) for name, term in FUSION_TERMS.items()}


BASELINE_TERMS = {"item_cooccurrence": "followers", "neighbourhood_cooccurrence": "neighbourhood"}
"""Each co-occurrence term ranked alone, under its baseline's name."""


def baseline_ranks(data: SequenceData, seed: int = 0, matrices: dict[str, Any] | None = None) -> Ranks:
    """Popularity and each co-occurrence term alone on the test targets, fitted on the model's
    training histories (all but the last two items), scored from the same inputs as the model,
    ranked under the same protocol (and against the same sampled negatives: same ``seed``)."""
    pop = popularity([seq[:-2] for seq in data.sequences], data.n_items)
    matrices = training_cooccurrence(data) if matrices is None else matrices
    _, targets, histories = evaluation_inputs(data.sequences, 1, "test")

    def popular(part: slice) -> dict[int, np.ndarray]:
        return {0: popularity_scores(pop, len(targets[part]))}

    def term_alone(term: str) -> Callable[[slice], dict[int, np.ndarray]]:
        return lambda part: {0: cooccurrence_scores(matrices[term], pop, histories[part], FUSION_TERMS[term].last)}

    scorers = {"popularity": popular, **{name: term_alone(term) for name, term in BASELINE_TERMS.items()}}
    alone: dict[str, Variant] = {"": ((0,), 0.0, "")}
    return {name: variant_ranks(score, None, targets, histories, alone, True, seed + 1)[""]
            for name, score in scorers.items()}


INTERVAL_METRICS = ("ndcg@10", "hr@10")
"""The test metrics given a 95 % paired bootstrap interval against item co-occurrence."""


def versus_cooccurrence(ranks: Ranks, cooccurrence_ranks: np.ndarray, seed: int = 0) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per ranking (e.g. the chosen one, the whole ensemble alone) and metric, the 95 % paired
    bootstrap intervals (the same test users resampled for both) of the ranking, of co-occurrence and
    of their ratio: a 1.09x whose interval holds 1.15x is not a miss the data can show, and one
    whose interval ends below it is."""
    return {name: {metric: {side: list(bounds) for side, bounds in
                            paired_intervals({"ranks": by_protocol["full"]}, {"ranks": cooccurrence_ranks}, metric, seed).items()}
                   for metric in INTERVAL_METRICS}
            for name, by_protocol in ranks.items()}


def target_batches(rows: np.ndarray, targets: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive ``rows`` cut into batches of about ``size`` next-item targets (``targets`` per row),
    so a step averages the loss over as many targets whether rows are prefixes (one each) or causal
    windows (up to max_len each): windows then take as many steps per epoch as prefixes do."""
    ends = np.searchsorted(np.cumsum(targets), np.arange(size, int(targets.sum()), size), side="right")
    return [part for part in np.split(rows, ends) if len(part)]  # a long row spanning two cuts leaves an empty part


def keep_training(seconds: float, share: float, limit: float, stale: int, patience: int, improving: bool) -> bool:
    """Whether a member trains another epoch: never past ``limit`` (all the budget left) or
    ``patience`` stale validation passes; past its ``share`` only while ``improving`` (its best pass
    is recent) -- a member still improving is worth more than a fresh one with less time (on a
    file twice Beauty's size, three 10-minute members ensembled below one trained 30 minutes)."""
    if seconds >= limit or stale >= patience:
        return False
    return seconds < share or improving


def train_member(data: SequenceData, spec: SequentialSpec, neighbours: dict[str, tuple[np.ndarray, np.ndarray]],
                 examples: tuple[np.ndarray, np.ndarray], share: float, limit: float,
                 log: Any = None) -> tuple[CausalSequenceModel, dict[str, Any]]:
    """One model from ``spec.seed``, trained for its ``share`` of seconds (longer while it still
    improves, up to ``limit``; see :func:`keep_training`), with the weights of its best validation
    NDCG@10 restored."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    inputs, targets = examples
    model = CausalSequenceModel(spec, data.n_items, data.attributes, data.n_attributes, neighbours)
    optimizer = tf.keras.optimizers.Adam(learning_rate=spec.learning_rate)
    signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32)]

    @tf.function(input_signature=signature)
    def train_step(items: Any, next_items: Any) -> Any:
        with tf.GradientTape() as tape:
            table = model.item_table()
            hidden = model.encode(items, table, training=True)
            loss = next_item_loss(hidden, next_items, next_items > 0, table, followers=model.followers(items),
                                  seen=items if spec.exclude_seen else None)
        gradients = tape.gradient(loss, model.variables)
        optimizer.apply_gradients(zip(gradients, model.variables, strict=True))
        return loss

    # Length-bucketed batches: rows of similar length train together, so trimming pays off.
    lengths = (inputs > 0).sum(axis=1)
    per_row = (targets > 0).sum(axis=1)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"ndcg": -1.0, "epoch": -1, "weights": None}
    train_seconds = 0.0
    stale = 0
    epoch = 0
    for epoch in range(1, spec.max_epochs + 1):
        started = time.perf_counter()
        order = np.lexsort((rng.random(len(inputs)), lengths))
        batches = target_batches(order, per_row[order], spec.batch_size)
        rng.shuffle(batches)
        losses = []
        for rows in batches:
            items = _trim(inputs[rows])  # targets share the inputs' padding (both are the window shifted by one)
            losses.append(float(train_step(tf.constant(items), tf.constant(targets[rows][:, -items.shape[1]:]))))
        train_seconds += time.perf_counter() - started
        entry: dict[str, float] = {"seed": spec.seed, "epoch": epoch, "loss": float(np.mean(losses)),
                                   "train_seconds": train_seconds}
        past_share = train_seconds >= share
        if epoch % spec.eval_every == 0 or past_share or epoch == spec.max_epochs:
            metrics = evaluate([model], data, "validation", (10,))[""]
            entry["validation_ndcg@10"] = metrics["validation_full_ndcg@10"]
            if entry["validation_ndcg@10"] > best["ndcg"]:
                best = {"ndcg": entry["validation_ndcg@10"], "epoch": epoch, "weights": model.get_weights()}
                stale = 0
            else:
                stale += 1
        history.append(entry)
        if log:
            log(entry)
        # Improving: the best pass is within the last ``eval_every`` epochs (one noisy pass is forgiven).
        if not keep_training(train_seconds, share, limit, stale, spec.patience, best["epoch"] > epoch - spec.eval_every):
            break
    if best["weights"] is not None:
        model.set_weights(best["weights"])
    return model, {"seed": spec.seed, "best_epoch": best["epoch"], "best_validation_ndcg@10": best["ndcg"], "epochs": epoch,
                   "train_seconds": train_seconds,
                   "history": history}


def train_and_evaluate(data: SequenceData, spec: SequentialSpec, log: Any = None,
                       matrices: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train up to ``spec.ensemble`` members within ``spec.minutes`` (each gets an equal share of what
    is left, and may run on while it improves), each keeping its best validation NDCG@10 weights; a
    member whose share is shorter than one of the first member's epochs is not started. The ranking
    (which members, fused with which co-occurrence term at which weight) is chosen on validation; report its
    validation and test metrics (full and sampled), the whole ensemble alone and each member's test
    numbers beside them."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    if spec.ensemble < 1:
        raise ValueError(f"ensemble must be >= 1 member, got {spec.ensemble}")
    unknown = sorted(set(spec.input_terms) - set(FUSION_TERMS))
    if unknown:
        raise ValueError(f"unknown input term(s) {', '.join(unknown)}; choose from {', '.join(FUSION_TERMS)}")
    threads = spec.threads or (os.cpu_count() or 2)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:  # TF already running in this process (a notebook, a test session): keep its pools
        logger.warning("TensorFlow is already initialised; thread settings left as they are")

    examples = (training_prefixes(data.sequences, spec.max_len) if spec.prefixes else
                training_windows(data.sequences, spec.max_len, spec.window_overlap))
    # The followers (and the fused term) are counted on the training histories only, exactly as the
    # co-occurrence baseline's.
    matrices = training_cooccurrence(data) if matrices is None else matrices
    neighbours = {term: top_followers(matrices[term], spec.neighbours) for term in spec.input_terms} if spec.neighbours else {}
    models, members = [], []
    left = spec.minutes * 60.0
    epoch_seconds = 0.0  # one epoch of the first member
    for member in range(spec.ensemble):
        share = left / (spec.ensemble - member)
        if member and share < epoch_seconds:
            logger.info("ensemble: %d member(s); %.1f min left for each further one, less than one epoch (%.1f min)",
                        member, max(share, 0.0) / 60, epoch_seconds / 60)
            break
        model, summary = train_member(data, replace(spec, seed=spec.seed + member), neighbours, examples, share, left, log)
        left -= summary["train_seconds"]
        epoch_seconds = epoch_seconds or summary["train_seconds"] / summary["epochs"]
        models.append(model)
        members.append(summary)
    # One scoring pass per stage. Validation: every candidate ranking (the k best members at every
    # weight), so the choice and the reports come from the same arrays. Test: the chosen ranking, all
    # members alone (the ensemble without the choice) and each member alone.
    everyone: Variant = (tuple(range(len(models))), 0.0, "")
    candidates = member_variants([m["best_validation_ndcg@10"] for m in members],
                                 FUSION_WEIGHTS if spec.fusion else (0.0,))
    validation = evaluate(models, data, "validation", spec.ks, True, spec.seed, candidates, matrices)
    curve = {variant: validation[name]["validation_full_ndcg@10"] for name, variant in candidates.items()}
    chosen = choose_ranking(curve)

    def seeds(chosen_members: tuple[int, ...]) -> str:
        return "+".join(str(members[m]["seed"]) for m in chosen_members)

    logger.info("ranking: seeds %s, co-occurrence %s x %g, chosen on validation (NDCG@10 %s)", seeds(chosen[0]),
                chosen[2] or "-", chosen[1], ", ".join(f"seeds {seeds(v[0])} {term_label(v)}: {curve[v]:.4f}" for v in curve))
    singles = {f"seed {m['seed']}": ((i,), 0.0, "") for i, m in enumerate(members)}
    test_ranks = evaluate_ranks(models, data, "test", True, spec.seed + 1, {"chosen": chosen, "everyone": everyone, **singles},
                                matrices)
    test = rank_reports(test_ranks, spec.ks, "test_")
    for name, summary in zip(singles, members, strict=True):
        summary["test"] = test[name]
    name_of = {variant: name for name, variant in candidates.items()}
    alone = {**validation[name_of[everyone]], **test["everyone"]}
    report = {**validation[name_of[chosen]], **test["chosen"]}
    by_members: dict[str, dict[str, float]] = {}
    for variant, value in curve.items():
        by_members.setdefault(seeds(variant[0]), {})[term_label(variant)] = value
    ranking = {"members": [members[m]["seed"] for m in chosen[0]], "weight": chosen[1], "term": chosen[2],
               "validation_ndcg@10": by_members}
    return {"metrics": report, "model_alone": alone, "ranking": ranking, "members": members,
            "test_ranks": {"chosen": test_ranks["chosen"], "everyone": test_ranks["everyone"]},
            "history": [e for m in members for e in m.pop("history")],
            "train_seconds": sum(m["train_seconds"] for m in members), "training_examples": len(examples[0]),
            "users": len(data.sequences), "items": data.n_items - 1, "skipped_short_users": data.skipped_short,
            "spec": {**asdict(spec), "overlap": spec.window_overlap}}


PUBLISHED_BEAUTY = {  # ../shared/data/README.md: S3-Rec paper, full ranking, the same files
    "BERT4Rec": {"hr@10": 0.0347, "ndcg@10": 0.0170},
    "SASRec": {"hr@10": 0.0605, "ndcg@10": 0.0318},
    "S3-Rec": {"hr@10": 0.0647, "ndcg@10": 0.0327},
}


def run_benchmark(sequences_path: str, attributes_path: str | None, spec: SequentialSpec,
                  tracking_uri: str | None = None, experiment: str | None = None, log: Any = None) -> dict[str, Any]:
    """Read, train within the budget, evaluate the model and the baselines on the test targets,
    and (with a tracking URI) record the run in MLflow."""
    data = read_sequences(sequences_path, attributes_path)
    logger.info("%s: %d users, %d items, %d skipped (< 3 items)", sequences_path, len(data.users), data.n_items - 1,
                data.skipped_short)
    started = time.perf_counter()
    matrices = training_cooccurrence(data)
    result = train_and_evaluate(data, spec, log=log, matrices=matrices)
    result["wall_seconds"] = time.perf_counter() - started
    baselines = baseline_ranks(data, spec.seed, matrices)
    result["baselines"] = rank_reports(baselines, spec.ks, "test_")
    # Per-user ranks stay out of the report; their paired intervals against co-occurrence go in, and
    # the chosen ranking's against the neighbourhood term alone (the stronger traditional one on some files).
    ranks = result.pop("test_ranks")
    result["intervals"] = versus_cooccurrence(ranks, baselines["item_cooccurrence"]["full"], spec.seed)
    result["intervals_vs_neighbourhood"] = versus_cooccurrence({"chosen": ranks["chosen"]},
                                                               baselines["neighbourhood_cooccurrence"]["full"], spec.seed)
    result["sequences_path"] = str(sequences_path)
    result["attributes_path"] = str(attributes_path) if attributes_path else None
    if tracking_uri:
        import mlflow

        from shopper_profiles.model.registry import use_experiment
        from shopper_profiles.model.tracking import mlflow_name

        use_experiment(tracking_uri, experiment or "shopper_profiles")
        with mlflow.start_run(run_name=f"sequence-benchmark-{Path(sequences_path).stem}") as run:
            mlflow.log_params({**{k: v for k, v in result["spec"].items() if k != "ks"}, "sequences": str(sequences_path),
                               "attributes": str(attributes_path), "users": result["users"], "items": result["items"]})
            for entry in result["history"]:
                seed = int(entry["seed"])
                mlflow.log_metric(f"train_loss_seed{seed}", entry["loss"], step=int(entry["epoch"]))
                if "validation_ndcg@10" in entry:
                    mlflow.log_metric(f"validation_ndcg_at_10_seed{seed}", entry["validation_ndcg@10"], step=int(entry["epoch"]))
            mlflow.log_metrics({mlflow_name(k): v for k, v in result["metrics"].items()})
            mlflow.log_metrics({mlflow_name(f"model_alone.{k}"): v for k, v in result["model_alone"].items()})
            mlflow.log_metrics({"fusion_weight": result["ranking"]["weight"], "ranking_members": len(result["ranking"]["members"])})
            mlflow.set_tag("fusion_term", result["ranking"]["term"] or "none")
            mlflow.set_tag("ranking_seeds", "+".join(str(seed) for seed in result["ranking"]["members"]))
            for member in result["members"]:
                mlflow.log_metrics({mlflow_name(f"seed{member['seed']}.{k}"): v for k, v in member["test"].items()})
            for name, metrics in result["baselines"].items():
                mlflow.log_metrics({mlflow_name(f"{name}.{k}"): v for k, v in metrics.items()})
            for ranking, by_metric in result["intervals"].items():  # e.g. chosen.ratio_vs_cooccurrence_ndcg_at_10_low
                mlflow.log_metrics({mlflow_name(f"{ranking}.ratio_vs_cooccurrence_{metric}_{end}"): bounds["ratio"][i]
                                    for metric, bounds in by_metric.items() for i, end in enumerate(("low", "high"))})
            mlflow.log_metrics({mlflow_name(f"chosen.ratio_vs_neighbourhood_{metric}_{end}"): bounds["ratio"][i]
                                for metric, bounds in result["intervals_vs_neighbourhood"]["chosen"].items()
                                for i, end in enumerate(("low", "high"))})
            mlflow.set_tag("protocol", "leave-one-out; full ranking over all items minus the user's history; "
                                       "sampled100 = target vs 100 uniform unseen negatives")
            result["mlflow_run_id"] = run.info.run_id
    return result
