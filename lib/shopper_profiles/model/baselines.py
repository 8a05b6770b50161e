"""Traditional next-item and profile baselines, scored on the same users and protocol as the model.

All work on integer item indices (0 padding; ``first_item`` and up are real items), so the same
code serves the simulator's training set and public sequence files:

- *popularity*: how often each item occurs in the training histories;
- *item co-occurrence*: item-to-item counts of "b followed a within ``window`` steps" over the
  training histories; a user scores the items that followed their latest items (recent ones
  weigh more), popularity breaks ties;
- *category rule* (the RFM/rule profile's recommendation): the user's favourite categories
  by share of history, best sellers first inside each;
- *repeat buy* (personal popularity): the items the user touched most often, popularity breaking
  ties -- the strongest simple baseline on reorder-heavy shops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse


def popularity(histories: Sequence[np.ndarray], n_items: int, first_item: int = 1) -> np.ndarray:
    counts = np.zeros(n_items, dtype=np.float64)
    for items in histories:
        real = items[items >= first_item]
        np.add.at(counts, real, 1.0)
    return counts


def cooccurrence(histories: Sequence[np.ndarray], n_items: int, window: int = 3, first_item: int = 1,
                 symmetric: bool = False) -> sparse.csr_matrix:
    """Directed counts C[a, b]: b appeared within ``window`` steps after a in one history; with
    ``symmetric``, before or after it (C + C^T: the order of items bought together says little)."""
    rows, cols = [], []
    for items in histories:
        real = items[items >= first_item]
        for gap in range(1, window + 1):
            if len(real) > gap:
                rows.append(real[:-gap])
                cols.append(real[gap:])
    if not rows:
        return sparse.csr_matrix((n_items, n_items))
    r, c = np.concatenate(rows), np.concatenate(cols)
    if symmetric:
        r, c = np.concatenate([r, c]), np.concatenate([c, r])
    return sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(n_items, n_items))


def top_followers(matrix: sparse.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item its ``k`` most frequent followers in a co-occurrence ``matrix`` (self-pairs aside;
    ties by item id) and log1p of their counts: the co-occurrence signal as a model input."""
    n_items = matrix.shape[0]
    follow = np.zeros((n_items, k), dtype=np.int32)
    strength = np.zeros((n_items, k), dtype=np.float32)
    matrix = matrix.tocsr()
    for item in range(n_items):
        start, end = matrix.indptr[item], matrix.indptr[item + 1]
        others, counts = matrix.indices[start:end], matrix.data[start:end]
        keep = others != item
        others, counts = others[keep], counts[keep]
        order = np.lexsort((others, -counts))[:k]
        follow[item, :len(order)] = others[order]
        strength[item, :len(order)] = np.log1p(counts[order])
    return follow, strength


def popularity_scores(pop: np.ndarray, users: int) -> np.ndarray:
    return np.broadcast_to(pop, (users, len(pop))).copy()


def cooccurrence_sums(matrix: sparse.csr_matrix, histories: Sequence[np.ndarray], last: int = 3,
                      first_item: int = 1) -> np.ndarray:
    """[users, n_items]: the sum of the co-occurrence rows of each user's ``last`` items (weights 1,
    1/2, 1/3 from the latest back)."""
    weights = sparse.lil_matrix((len(histories), matrix.shape[0]))
    for row, items in enumerate(histories):
        real = items[items >= first_item]
        for back, item in enumerate(real[::-1][:last]):
            weights[row, int(item)] += 1.0 / (back + 1)
    return np.asarray((weights.tocsr() @ matrix).todense())


def cooccurrence_scores(matrix: sparse.csr_matrix, pop: np.ndarray, histories: Sequence[np.ndarray], last: int = 3,
                        first_item: int = 1) -> np.ndarray:
    """:func:`cooccurrence_sums` plus popularity scaled below 1/6 (the finest step of those sums) so
    it only breaks ties."""
    tie = 0.1 * pop / (pop.max() + 1.0)
    return cooccurrence_sums(matrix, histories, last, first_item) + tie[None, :]


def category_rule_scores(item_category: np.ndarray, pop: np.ndarray, affinities: np.ndarray) -> np.ndarray:
    """``affinities[user, category]`` (e.g. share of the user's history) picks the categories;
    popularity orders items inside them. Items without a category (-1) come after every
    category the user has touched, by popularity."""
    tie = 1e-6 * pop / (pop.max() + 1.0)
    known = item_category >= 0
    per_item = np.zeros((affinities.shape[0], len(item_category)))
    per_item[:, known] = affinities[:, item_category[known]]
    return per_item + tie[None, :]


def category_shares(histories: Sequence[np.ndarray], item_category: np.ndarray, n_categories: int,
                    first_item: int = 1) -> np.ndarray:
    """Each user's share of history per category (the rule profile's interest vector)."""
    out = np.zeros((len(histories), n_categories))
    for row, items in enumerate(histories):
        cats = item_category[items[items >= first_item]]
        cats = cats[cats >= 0]
        if len(cats):
            np.add.at(out[row], cats, 1.0)
            out[row] /= len(cats)
    return out


def repeat_scores(pop: np.ndarray, histories: Sequence[np.ndarray], first_item: int = 1) -> np.ndarray:
    """How often each user touched each item, plus popularity scaled below 1 so it only breaks ties."""
    scores = np.broadcast_to(0.5 * pop / (pop.max() + 1.0), (len(histories), len(pop))).copy()
    for row, items in enumerate(histories):
        real = items[items >= first_item]
        np.add.at(scores[row], real, 1.0)
    return scores
