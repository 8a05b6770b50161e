"""Ranking and classification metrics with the protocol in their names (numpy only).

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


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum statistic (ties count half); NaN when one class is absent."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.argsort(kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_report(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5, prefix: str = "") -> dict[str, float]:
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {f"{prefix}accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
            f"{prefix}precision": precision, f"{prefix}recall": recall, f"{prefix}f1": f1,
            f"{prefix}auc": auc(labels, scores)}


def multiclass_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    labels = np.asarray(labels)
    known = labels >= 0
    if not known.any():
        return float("nan")
    return float((np.asarray(probabilities)[known].argmax(axis=1) == labels[known]).mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def average_ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        ranks = np.empty(len(x), dtype=np.float64)
        sorted_x = np.asarray(x)[order]
        i = 0
        while i < len(x):
            j = i
            while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
                j += 1
            ranks[order[i:j + 1]] = (i + j) / 2.0
            i = j + 1
        return ranks
    ra, rb = average_ranks(np.asarray(a, dtype=np.float64)), average_ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k_recall(true_sets: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], k: int = 3) -> float:
    """Share of the true top-k items found in the predicted top-k, averaged over users."""
    scores = [len(set(t[:k]) & set(p[:k])) / max(1, len(t[:k])) for t, p in zip(true_sets, predicted, strict=True)]
    return float(np.mean(scores)) if scores else 0.0
