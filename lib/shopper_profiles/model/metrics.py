"""Ranking metrics with the protocol in their names (ours: no library ranks the way we need), and
the classification/correlation metrics from sklearn and scipy.

Ranks are 0-based: rank = number of other candidates scored at least as high as the target, so
a tie never flatters a method (a popularity list ties many items; an untrained model ties all).
A non-finite target score ranks last and a NaN candidate counts as ahead: a broken score is never a hit.
Full ranking ranks the target among every item (minus the user's history when ``exclude`` is
given, as in the S3-Rec evaluation code); sampled ranking ranks it among ``n_negatives`` items
drawn uniformly from those the user never touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def full_ranks(scores: np.ndarray, targets: np.ndarray, exclude: Sequence[Sequence[int] | np.ndarray] | None = None) -> np.ndarray:
    """Scores keep their dtype (float32 from the model): without ``exclude`` nothing is copied."""
    scores = np.asarray(scores)
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    if exclude is not None:
        banned = history_mask(len(targets), scores.shape[1], exclude)
        banned[rows, targets] = False  # the target itself is always ranked
        scores = np.where(banned, -np.inf, scores.astype(np.result_type(scores.dtype, np.float32)))
    ahead = scores >= target_scores[:, None]
    ahead |= np.isnan(scores)  # a NaN candidate counts as ahead
    ranks = ahead.sum(axis=1) - 1  # minus the target itself
    # A NaN/inf target score is a miss, never a hit: it ranks behind every other item.
    return np.where(np.isfinite(target_scores), ranks, scores.shape[1] - 1)


_U64 = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a counter-based uniform 64-bit hash (uint64 products wrap)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def uniform_negatives(seen: np.ndarray, users: np.ndarray, n_negatives: int, seed: int = 0, first_item: int = 0) -> np.ndarray:
    """``n_negatives`` items per row drawn uniformly (with replacement) from ``[first_item, n_items)``
    minus the row's ``seen`` items (a users x items mask). Each draw is a hash of (seed, the user's
    global row number ``users``, slot, attempt), so a user gets the same negatives whatever chunk
    it is scored in, and every method is judged against the same ones."""
    seen = np.asarray(seen, dtype=bool)
    n_items = seen.shape[1]
    if len(seen) and seen[:, first_item:].all(axis=1).any():
        raise ValueError("a user has touched every item: there is no unseen negative to sample")
    span = _U64(n_items - first_item)
    base = _mix(np.array([seed], dtype=_U64) + _U64(0x9E3779B97F4A7C15))
    out = np.empty((len(seen), n_negatives), dtype=np.int64)
    rows, slots = np.divmod(np.arange(out.size), n_negatives)
    attempt = 0
    while len(rows):
        counter = slots.astype(_U64) + _U64(attempt * n_negatives)
        draws = (_mix(_mix(base ^ np.asarray(users, dtype=_U64)[rows]) ^ counter) % span).astype(np.int64) + first_item
        unseen = ~seen[rows, draws]
        out[rows[unseen], slots[unseen]] = draws[unseen]
        rows, slots, attempt = rows[~unseen], slots[~unseen], attempt + 1
    return out


def sampled_ranks(scores: np.ndarray, targets: np.ndarray, exclude: Sequence[Sequence[int] | np.ndarray] | None = None,
                  n_negatives: int = 100, seed: int = 0, first_item: int = 0, users: np.ndarray | None = None) -> np.ndarray:
    """Rank among ``n_negatives`` uniform negatives (never the target nor the user's items).
    ``first_item`` skips reserved ids (padding/mask) at the start of the score columns; ``users``
    (default 0..n-1) are the rows' global numbers, which fix their negatives (:func:`uniform_negatives`)."""
    scores = np.asarray(scores)
    users = np.arange(len(targets)) if users is None else users
    return ranks_among(scores, targets, unseen_negatives(scores.shape[1], targets, exclude, users, n_negatives, seed, first_item))


def history_mask(n_rows: int, n_items: int, histories: Sequence[Sequence[int] | np.ndarray] | None) -> np.ndarray:
    """[n_rows, n_items] bool: True where the row's user had the item (``histories[row]``)."""
    mask = np.zeros((n_rows, n_items), dtype=bool)
    for row, items in enumerate(histories if histories is not None else ()):
        mask[row, np.asarray(items, dtype=np.int64)] = True
    return mask


def unseen_negatives(n_items: int, targets: np.ndarray, exclude: Sequence[Sequence[int] | np.ndarray] | None,
                     users: np.ndarray, n_negatives: int, seed: int = 0, first_item: int = 0) -> np.ndarray:
    """:func:`uniform_negatives` that are never the row's target nor one of its ``exclude`` items."""
    seen = history_mask(len(targets), n_items, exclude)
    seen[np.arange(len(targets)), targets] = True
    return uniform_negatives(seen, users, n_negatives, seed, first_item)


def ranks_among(scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Each target's rank among its row's ``negatives`` (ties and NaN candidates count ahead; a
    NaN/inf target is a miss)."""
    rows = np.arange(len(targets))
    candidates, target_scores = np.asarray(scores)[rows[:, None], negatives], np.asarray(scores)[rows, targets]
    ahead = ((candidates >= target_scores[:, None]) | np.isnan(candidates)).sum(axis=1)
    return np.where(np.isfinite(target_scores), ahead, negatives.shape[1])


def hit_rate(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(np.asarray(ranks) < k)) if len(ranks) else 0.0


def ndcg(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks)
    if not len(ranks):
        return 0.0
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(gains.mean())


def ranking_report(ranks: np.ndarray, ks: Sequence[int] = (5, 10, 20), prefix: str = "") -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"{prefix}hr@{k}"] = hit_rate(ranks, k)
        out[f"{prefix}ndcg@{k}"] = ndcg(ranks, k)
    return out


def statistic(sample: dict[str, np.ndarray], metric: str, rows: np.ndarray) -> float:
    """``metric`` recomputed on the users ``rows`` of a per-user sample."""
    if "ranks" in sample:
        name, _, k = metric.partition("@")
        ranks = sample["ranks"][rows]
        return hit_rate(ranks, int(k)) if name == "hr" else ndcg(ranks, int(k))
    if "labels" in sample:
        return auc(sample["labels"][rows], sample["scores"][rows])
    if "actual" in sample:
        return spearman(sample["actual"][rows], sample["estimate"][rows])
    if metric in sample:  # per-user values of several metrics (e.g. a basket's recall@k and ndcg@k)
        return float(np.mean(sample[metric][rows]))
    return float(np.mean(sample["values"][rows]))


INTERVAL_USERS = 100_000


def paired_intervals(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], metric: str, seed: int = 0,
                     resamples: int = 1000, most_users: int = INTERVAL_USERS) -> dict[str, tuple[float, float]]:
    """95 % percentile bootstrap intervals (``scipy.stats.bootstrap``) of both methods' metric and of
    their ratio, resampling the *same* users for both (paired). Beyond ``most_users`` the resamples
    are drawn from a seeded random subset of that size (a thousand AUCs over 10^6 users would take
    minutes): the interval is then wider than the whole set's, never narrower."""
    from scipy.stats import bootstrap

    def both(idx: np.ndarray) -> np.ndarray:
        rows = idx.astype(int)
        mine, base = statistic(ours, metric, rows), statistic(theirs, metric, rows)
        return np.array([mine, base, mine / base if base else np.nan])

    users = np.arange(len(next(iter(ours.values()))))
    if len(users) > most_users:
        users = np.sort(np.random.default_rng(seed).choice(users, most_users, replace=False))
    # batch: resample indices 50 x users at a time (all 1,000 at once were 800 MB at 100k users)
    found = bootstrap((users,), both, vectorized=False, paired=True, n_resamples=resamples, method="percentile",
                      random_state=seed, batch=50)
    low, high = found.confidence_interval
    return {name: (float(low[i]), float(high[i])) for i, name in enumerate(("profile_model", "traditional", "ratio"))}


def basket_metrics(scores: np.ndarray, baskets: Sequence[Sequence[int] | np.ndarray],
                   ks: Sequence[int] = (10, 20)) -> dict[str, np.ndarray]:
    """Per user ``recall@k`` (share of the basket in the top k) and ``ndcg@k`` (binary gains over
    the ideal order) of a *set* of targets, e.g. the items bought in the next window. Ties are
    broken against the basket and a non-finite basket score is a miss, as in :func:`full_ranks`.

    Vectorised over users: each basket item's position in the ordering (score descending, the
    other items first among ties, then item id) is counted against its row, a users-sized group of
    basket items at a time (memory: about one more copy of ``scores``)."""
    scores = np.asarray(scores)
    n_rows, n_items = scores.shape
    unique = [np.unique(np.asarray(b, dtype=np.int64)) for b in baskets]
    sizes = np.array([len(b) for b in unique], dtype=np.int64)
    if (sizes == 0).any():
        raise ValueError(f"user row {int(np.argmin(sizes))} has an empty basket; keep only users who bought something")
    row_of = np.repeat(np.arange(n_rows), sizes)
    items = np.concatenate(unique) if len(unique) else np.zeros(0, dtype=np.int64)
    wanted = np.zeros((n_rows, n_items), dtype=bool)
    wanted[row_of, items] = True
    key = scores.astype(np.result_type(scores.dtype, np.float32), copy=True)
    key[np.isnan(key) & ~wanted] = np.inf  # a NaN candidate counts as ahead
    key[~np.isfinite(key) & wanted] = -np.inf  # a NaN/inf target is a miss
    mine = key[row_of, items]
    position = np.empty(len(items), dtype=np.int64)
    group = max(1, n_rows)
    for start in range(0, len(items), group):
        part = slice(start, start + group)
        rows, value = row_of[part], mine[part][:, None]
        others = key[rows]
        position[part] = (others > value).sum(axis=1) + ((others == value) & ~wanted[rows]).sum(axis=1)
    # Basket items tied with each other keep item-id order (as a stable sort would).
    order = np.lexsort((items, mine, row_of))
    fresh = np.ones(len(order), dtype=bool)
    fresh[1:] = (row_of[order][1:] != row_of[order][:-1]) | (mine[order][1:] != mine[order][:-1])
    starts = np.maximum.accumulate(np.where(fresh, np.arange(len(order)), 0))
    position[order] += np.arange(len(order)) - starts
    out = {}
    for k in ks:
        hit = position < k
        gain = np.where(hit, 1.0 / np.log2(position + 2.0), 0.0)
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(sizes, k) - 1]
        out[f"recall@{k}"] = np.bincount(row_of, weights=hit.astype(np.float64), minlength=n_rows) / sizes
        out[f"ndcg@{k}"] = np.bincount(row_of, weights=gain, minlength=n_rows) / ideal
    return {name: out[name] for k in ks for name in (f"recall@{k}", f"ndcg@{k}")}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (``sklearn.metrics.roc_auc_score``: ties count half); NaN when one class is absent."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def binary_report(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5, prefix: str = "") -> dict[str, float]:
    """Accuracy, precision, recall and F1 at ``threshold`` (sklearn; 0 where undefined) and AUC."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    if not len(labels):
        return {f"{prefix}accuracy": 0.0, f"{prefix}precision": 0.0, f"{prefix}recall": 0.0, f"{prefix}f1": 0.0,
                f"{prefix}auc": float("nan")}
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, average="binary", zero_division=0)
    return {f"{prefix}accuracy": float(accuracy_score(labels, predicted)), f"{prefix}precision": float(precision),
            f"{prefix}recall": float(recall), f"{prefix}f1": float(f1), f"{prefix}auc": auc(labels, scores)}


def multiclass_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    labels = np.asarray(labels)
    known = labels >= 0
    if not known.any():
        return float("nan")
    return float((np.asarray(probabilities)[known].argmax(axis=1) == labels[known]).mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``, average ranks for ties); NaN if constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def top_k_recall(true: np.ndarray, predicted: np.ndarray, k: int = 3) -> np.ndarray:
    """Per shopper, the share of their true top k (rows of category indices, -1 = padding) found
    in their predicted top k: one value per shopper, so intervals can resample shoppers."""
    return found_share(true[:, :k], predicted[:, :k])


def found_share(true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per shopper, the share of their true indices (rows, -1 = padding) anywhere in their predicted row."""
    found = ((true[:, :, None] == predicted[:, None, :]) & (true[:, :, None] >= 0)).any(axis=2).sum(axis=1)
    return found / np.maximum(1, (true >= 0).sum(axis=1))
