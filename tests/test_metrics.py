"""Metric functions on hand-made rankings with exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shopper_profiles.model.metrics import (
    auc,
    basket_metrics,
    binary_report,
    full_ranks,
    hit_rate,
    ndcg,
    paired_intervals,
    ranking_report,
    sampled_ranks,
    spearman,
    statistic,
    top_k_recall,
)


def test_full_ranks_count_higher_and_tied_scores_and_exclude_history() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.3],    # target 2: only item 1 is higher -> rank 1
                       [0.4, 0.4, 0.4, 0.1],    # target 0: two ties count against it -> rank 2
                       [0.8, 0.7, 0.6, 0.5]])   # target 3: three higher -> rank 3
    targets = np.array([2, 0, 3])
    assert full_ranks(scores, targets).tolist() == [1, 2, 3]
    # Excluding history (item 1 for user 0, items 0 and 1 for user 2) lifts those targets.
    assert full_ranks(scores, targets, exclude=[[1], [], [0, 1]]).tolist() == [0, 2, 1]


def test_a_nan_or_inf_score_is_never_a_hit() -> None:
    scores = np.array([[np.nan, 0.2, 0.1, 0.3],     # target 0 scored NaN: a miss, ranked last
                       [0.1, np.inf, 0.5, 0.3],     # target 1 scored +inf: not finite, a miss
                       [0.5, np.nan, 0.9, 0.1]])    # target 2 is best, but a NaN candidate counts ahead
    ranks = full_ranks(scores, np.array([0, 1, 2]))
    assert ranks.tolist() == [3, 3, 1]
    assert hit_rate(ranks, 1) == 0.0
    assert sampled_ranks(scores[:1], np.array([0]), n_negatives=3, seed=0).tolist() == [3]
    assert sampled_ranks(np.array([[0.5, np.nan, 0.9, np.nan]]), np.array([2]), exclude=[[0]], n_negatives=4,
                         seed=0).tolist() == [4]


def test_basket_recall_and_ndcg_exact_values_ties_against_the_basket() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5],      # basket {1, 3}: positions 2 and 4
                       [0.5, 0.5, 0.5, 0.1, np.nan],   # basket {0}: two ties ahead of it, a NaN counts ahead too
                       [np.nan, 0.1, 0.2, 0.3, 0.4]])  # basket {0, 4}: the NaN basket item is a miss
    found = basket_metrics(scores, [[1, 3], [0], [4, 0]], ks=(2, 4))
    assert found["recall@2"].tolist() == [0.5, 0.0, 0.5]
    assert found["recall@4"].tolist() == [1.0, 1.0, 0.5]
    ideal2 = 1 + 1 / math.log2(3)
    assert found["ndcg@2"] == pytest.approx([(1 / math.log2(3)) / ideal2, 0.0, 1 / ideal2])
    assert found["ndcg@4"][0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal2)
    assert found["ndcg@4"][1] == pytest.approx(1 / math.log2(5))  # rank 4 of a one-item basket
    with pytest.raises(ValueError, match="empty basket"):
        basket_metrics(scores[:1], [[]])


def test_hr_and_ndcg_exact_values() -> None:
    ranks = np.array([0, 1, 4, 10])
    assert hit_rate(ranks, 1) == 0.25
    assert hit_rate(ranks, 5) == 0.75
    assert ndcg(ranks, 5) == pytest.approx((1.0 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert ndcg(ranks, 20) == pytest.approx((1.0 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(12)) / 4)
    report = ranking_report(ranks, ks=(5,), prefix="full_")
    assert set(report) == {"full_hr@5", "full_ndcg@5"}


def test_sampled_ranks_use_only_unseen_negatives() -> None:
    scores = np.array([[0.0, 5.0, 1.0, 2.0, 3.0, 4.0]])
    # target 1 outscores everything: rank 0 however negatives fall.
    assert sampled_ranks(np.ones((1, 6)), np.array([1]), n_negatives=4, seed=3).tolist() == [4]  # ties count against
    assert sampled_ranks(scores, np.array([1]), n_negatives=4, seed=3).tolist() == [0]
    # target 2 (score 1.0): negatives drawn from {3, 4, 5} only (0 and 1 excluded) all outscore it.
    assert sampled_ranks(scores, np.array([2]), exclude=[[0, 1]], n_negatives=5, seed=1).tolist() == [5]


def test_auc_and_binary_report() -> None:
    labels = np.array([1, 0, 1, 0])
    assert auc(labels, np.array([0.9, 0.1, 0.8, 0.2])) == 1.0
    assert auc(labels, np.array([0.1, 0.9, 0.2, 0.8])) == 0.0
    assert auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert auc(labels, np.array([0.9, 0.8, 0.3, 0.1])) == 0.75
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))
    report = binary_report(labels, np.array([0.9, 0.6, 0.4, 0.1]))
    assert report == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "auc": 0.75}


def test_spearman_and_top_k_recall() -> None:
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(0.9486833)
    true = np.array([[0, 1, 2], [3, 4, 5], [6, -1, -1], [-1, -1, -1]])  # -1: fewer than 3 true interests
    predicted = np.array([[2, 0, 7], [7, 8, 3], [9, 6, 0], [0, 1, 2]])
    assert top_k_recall(true, predicted).tolist() == pytest.approx([2 / 3, 1 / 3, 1.0, 0.0])
    assert top_k_recall(true, predicted, k=1).tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0])  # only first places


def test_best_threshold_is_the_highest_cut_with_the_best_f1() -> None:
    from shopper_profiles.model.evaluation import best_threshold

    rng = np.random.default_rng(1)
    labels = rng.random(200) < 0.3
    scores = np.round(labels * 0.3 + rng.random(200), 2)  # ties on purpose
    brute = max((binary_report(labels, scores, threshold=c)["f1"], c) for c in np.unique(scores))
    assert best_threshold(labels, scores) == brute[1]
    assert best_threshold(np.zeros(4, bool), np.arange(4.0)) == 0.5  # one class only: the neutral cut


def test_paired_bootstrap_intervals_cover_the_values_and_the_ratio() -> None:
    rng = np.random.default_rng(2)
    ours = {"ranks": rng.integers(0, 30, size=400)}
    theirs = {"ranks": rng.integers(0, 60, size=400)}
    found = paired_intervals(ours, theirs, "ndcg@10", resamples=300)
    everyone = np.arange(400)
    value, base = statistic(ours, "ndcg@10", everyone), statistic(theirs, "ndcg@10", everyone)
    assert found["profile_model"][0] < value < found["profile_model"][1]
    assert found["traditional"][0] < base < found["traditional"][1]
    assert found["ratio"][0] < value / base < found["ratio"][1]
    assert found["ratio"][0] > 1.0  # twice the hit zone: the ratio interval excludes a tie
    labels = rng.random(400) < 0.4
    binary = paired_intervals({"labels": labels, "scores": labels + rng.random(400)},
                              {"labels": labels, "scores": rng.random(400)}, "auc", resamples=200)
    assert binary["profile_model"][0] > 0.8 and binary["traditional"][1] < 0.6


def test_intervals_over_more_users_than_the_cap_come_from_a_subset_and_are_not_narrower() -> None:
    rng = np.random.default_rng(3)
    ours, theirs = {"ranks": rng.integers(0, 30, size=4000)}, {"ranks": rng.integers(0, 60, size=4000)}
    whole = paired_intervals(ours, theirs, "ndcg@10", resamples=300)
    capped = paired_intervals(ours, theirs, "ndcg@10", resamples=300, most_users=1000)
    assert capped != whole
    width = {name: (capped[name][1] - capped[name][0]) / (whole[name][1] - whole[name][0]) for name in whole}
    assert all(1.5 < w < 2.6 for w in width.values()), width  # a quarter of the users: about twice as wide


def test_vectorised_basket_metrics_equal_a_plain_sort_per_user() -> None:
    """Positions in the order (score descending, non-basket items first among ties, then item id),
    NaN candidates ahead and non-finite basket items last, against a per-user stable sort."""
    rng = np.random.default_rng(4)
    for _ in range(200):
        n, m = int(rng.integers(1, 8)), int(rng.integers(3, 30))
        scores = np.round(rng.random((n, m)) * 3, 1)
        scores[rng.random((n, m)) < 0.08] = np.nan
        scores[rng.random((n, m)) < 0.05] = np.inf
        baskets = [rng.choice(m, size=int(rng.integers(1, min(m, 6) + 1)), replace=False) for _ in range(n)]
        found = basket_metrics(scores.astype(np.float32), baskets, ks=(2, 5))
        for row, basket in enumerate(baskets):
            wanted = np.isin(np.arange(m), basket)
            key = scores[row].copy()
            key[np.isnan(key) & ~wanted] = np.inf
            key[~np.isfinite(key) & wanted] = -np.inf
            order = sorted(range(m), key=lambda i: (-key[i], wanted[i], i))
            for k in (2, 5):
                hits = [wanted[i] for i in order[:k]]
                ideal = sum(1 / math.log2(p + 2) for p in range(min(k, len(basket))))
                assert found[f"recall@{k}"][row] == pytest.approx(sum(hits) / len(basket))
                assert found[f"ndcg@{k}"][row] == pytest.approx(sum(h / math.log2(p + 2) for p, h in enumerate(hits)) / ideal)


def test_sampled_negatives_depend_on_the_user_not_on_the_chunk() -> None:
    from shopper_profiles.model.metrics import uniform_negatives

    rng = np.random.default_rng(5)
    seen = rng.random((50, 40)) < 0.3
    seen[:, :2] = False
    whole = uniform_negatives(seen, np.arange(50), 100, seed=7, first_item=2)
    parts = np.concatenate([uniform_negatives(seen[a:a + 13], np.arange(a, min(a + 13, 50)), 100, seed=7, first_item=2)
                            for a in range(0, 50, 13)])
    assert np.array_equal(whole, parts)
    assert not seen[np.arange(50)[:, None], whole].any() and (whole >= 2).all()
    counts = np.bincount(whole.ravel(), minlength=40)[2:]
    assert counts.min() > 0  # every item can be drawn
    assert not np.array_equal(whole, uniform_negatives(seen, np.arange(50), 100, seed=8, first_item=2))
    with pytest.raises(ValueError, match="every item"):
        uniform_negatives(np.ones((1, 5), dtype=bool), np.arange(1), 3, first_item=1)


def test_the_price_level_task_ranks_each_estimate_against_the_next_windows_level_where_there_is_one() -> None:
    """Shoppers without a priced event next (NaN or 0) are left out; each method's Spearman is with the
    log level, and the headline's bootstrap recomputes it from the same pairs."""
    from shopper_profiles.model.evaluation import PRICE_LEVEL, Gathered, Results, headline, price_level_results

    level = np.array([0.8, 1.0, 1.25, np.nan, 0.0, 0.9, 1.1, 1.5])
    test = Gathered()
    test.put(price_next=level, price=np.log(np.array([0.7, 1.1, 1.3, 1.0, 1.0, 0.95, 1.2, 2.0])),
             price_rule=np.array([0.0, 0.1, -0.1, 5.0, 5.0, 0.2, 0.3, 0.0]),
             item_price_rule=np.array([-0.2, 0.0, 0.1, 9.0, -9.0, -0.1, 0.2, 0.1]))
    results = Results()
    price_level_results(results, test)
    kept = np.isfinite(level) & (level > 0)
    for method, estimate in (("profile_model", test["price"]), ("price_rule", test["price_rule"]),
                             ("item_price_rule", test["item_price_rule"])):
        expected = spearman(np.log(level[kept]), estimate[kept])
        assert results.value(method, "price_level_next_window", "spearman", PRICE_LEVEL) == pytest.approx(expected)
    assert results.value("profile_model", "price_level_next_window", "spearman") == pytest.approx(1.0)
    sample = results.samples[("item_price_rule", "price_level_next_window", PRICE_LEVEL)]
    assert statistic(sample, "spearman", np.arange(int(kept.sum()))) == pytest.approx(
        results.value("item_price_rule", "price_level_next_window", "spearman"))
    row = next(h for h in headline(results) if h["task"] == "price_level_next_window")
    assert row["best_traditional"] == "item_price_rule" and row["ratio"] == pytest.approx(1.0 / row["traditional"])
