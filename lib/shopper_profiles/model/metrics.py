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
    scores = np.array(scores, dtype=np.float64, copy=True)
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    if exclude is not None:
        for row, items in enumerate(exclude):
            banned = [i for i in items if i != targets[row]]
            scores[row, banned] = -np.inf
    ahead = (scores >= target_scores[:, None]) | np.isnan(scores)  # a NaN candidate counts as ahead
    ranks = ahead.sum(axis=1) - 1  # minus the target itself
    # A NaN/inf target score is a miss, never a hit: it ranks behind every other item.
    return np.where(np.isfinite(target_scores), ranks, scores.shape[1] - 1)


def sampled_ranks(scores: np.ndarray, targets: np.ndarray, exclude: Sequence[Sequence[int] | np.ndarray] | None = None,
                  n_negatives: int = 100, seed: int = 0, first_item: int = 0) -> np.ndarray:
    """Rank among ``n_negatives`` uniform negatives (never the target nor the user's items).
    ``first_item`` skips reserved ids (padding/mask) at the start of the score columns."""
    rng = np.random.default_rng(seed)
    n_items = scores.shape[1]
    ranks = np.empty(len(targets), dtype=np.int64)
    for row, target in enumerate(targets):
        seen = set(exclude[row]) if exclude is not None else set()
        seen.add(int(target))
        negatives: list[int] = []
        while len(negatives) < n_negatives:
            draw = int(rng.integers(first_item, n_items))
            if draw not in seen:
                negatives.append(draw)
        candidates, target_score = scores[row, negatives], scores[row, target]
        ranks[row] = (int(((candidates >= target_score) | np.isnan(candidates)).sum()) if np.isfinite(target_score)
                      else n_negatives)  # a NaN/inf target is a miss
    return ranks


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


def basket_metrics(scores: np.ndarray, baskets: Sequence[Sequence[int] | np.ndarray],
                   ks: Sequence[int] = (10, 20)) -> dict[str, np.ndarray]:
    """Per user ``recall@k`` (share of the basket in the top k) and ``ndcg@k`` (binary gains over
    the ideal order) of a *set* of targets, e.g. the items bought in the next window. Ties are
    broken against the basket and a non-finite basket score is a miss, as in :func:`full_ranks`."""
    n_items, top_k = scores.shape[1], max(ks)
    out = {f"{name}@{k}": np.zeros(len(baskets)) for k in ks for name in ("recall", "ndcg")}
    discounts = 1.0 / np.log2(np.arange(2, top_k + 2))
    for row, basket in enumerate(baskets):
        basket = np.unique(np.asarray(basket, dtype=np.int64))
        if not len(basket):
            raise ValueError(f"user row {row} has an empty basket; keep only users who bought something")
        wanted = np.zeros(n_items, dtype=bool)
        wanted[basket] = True
        key = np.array(scores[row], dtype=np.float64, copy=True)
        key[np.isnan(key) & ~wanted] = np.inf  # a NaN candidate counts as ahead
        key[~np.isfinite(key) & wanted] = -np.inf  # a NaN/inf target is a miss
        order = np.lexsort((wanted, -key))[:top_k]  # ties: the other items first
        hits = wanted[order].astype(np.float64)
        for k in ks:
            ideal = discounts[:min(k, len(basket))].sum()
            out[f"recall@{k}"][row] = hits[:k].sum() / len(basket)
            out[f"ndcg@{k}"][row] = (hits[:k] * discounts[:k]).sum() / ideal
    return out


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


def top_k_recall(true_sets: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], k: int = 3) -> float:
    """Share of the true top-k items found in the predicted top-k, averaged over users."""
    scores = [len(set(t[:k]) & set(p[:k])) / max(1, len(t[:k])) for t, p in zip(true_sets, predicted, strict=True)]
    return float(np.mean(scores)) if scores else 0.0
