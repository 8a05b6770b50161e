"""Traditional baselines, thresholds and the sequence loss on hand-made data (exact values)."""

from __future__ import annotations

import numpy as np
import pytest
from shopper_profiles.model import baselines
from shopper_profiles.model.evaluation import best_threshold
from shopper_profiles.model.metrics import full_ranks


def test_popularity_counts_real_items_only() -> None:
    histories = [np.array([0, 0, 2, 3, 3]), np.array([1, 3, 4])]  # 0 padding, 1 mask: not items here
    assert baselines.popularity(histories, 5, first_item=2).tolist() == [0, 0, 1, 3, 1]


def test_cooccurrence_counts_followers_within_the_window() -> None:
    matrix = baselines.cooccurrence([np.array([2, 3, 4]), np.array([2, 3])], 5, window=2, first_item=2).toarray()
    expected = np.zeros((5, 5))
    expected[2, 3] = 2  # 2 -> 3 in both histories
    expected[2, 4] = 1  # 2 -> 4 two steps later
    expected[3, 4] = 1
    assert (matrix == expected).all()
    # Symmetric: a pair counts in both directions (the basket's order says little), self-pairs never.
    both = baselines.cooccurrence([np.array([2, 3, 4]), np.array([2, 3])], 5, window=2, first_item=2, symmetric=True)
    assert (both.toarray() == expected + expected.T).all()


def test_cooccurrence_scores_rank_what_followed_the_latest_items() -> None:
    histories = [np.array([1, 2]), np.array([1, 2]), np.array([1, 3]), np.array([4, 4, 4, 4])]
    matrix = baselines.cooccurrence(histories, 5, window=1)
    pop = baselines.popularity(histories, 5)
    scores = baselines.cooccurrence_scores(matrix, pop, [np.array([0, 1])], last=1)
    # After item 1: item 2 twice, item 3 once; item 4 is the most popular but never followed 1.
    assert list(np.argsort(-scores[0])[:3]) == [2, 3, 4]
    assert scores[0, 2] - scores[0, 3] == pytest.approx(1.0 + 0.1 * (pop[2] - pop[3]) / (pop.max() + 1.0))


def test_category_rule_prefers_the_favourite_category_then_popularity() -> None:
    item_category = np.array([-1, 0, 0, 1, 1, -1])
    pop = np.array([0, 5, 1, 9, 2, 20], dtype=float)
    shares = baselines.category_shares([np.array([1, 2, 2, 3])], item_category, 2)
    assert shares[0].tolist() == [0.75, 0.25]
    scores = baselines.category_rule_scores(item_category, pop, shares)
    assert list(np.argsort(-scores[0])[:4]) == [1, 2, 3, 4]


def test_repeat_buy_ranks_the_users_own_items_by_count_then_popularity() -> None:
    pop = np.array([0, 0, 1, 9, 4, 50], dtype=float)
    scores = baselines.repeat_scores(pop, [np.array([0, 2, 4, 2, 1])], first_item=2)
    # Item 2 twice, item 4 once, then the rest by popularity (5 before 3); mask (1) and padding count nothing.
    assert list(np.argsort(-scores[0])[:4]) == [2, 4, 5, 3]
    assert scores[0, 2] - scores[0, 4] == pytest.approx(1.0 + 0.5 * (pop[2] - pop[4]) / (pop.max() + 1.0))


def test_best_threshold_maximises_f1() -> None:
    labels = np.array([0, 0, 1, 1, 1, 0])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.7])
    # Cut 0.3 catches all three positives with one false positive (0.7): F1 = 6/7; cut 0.8 gives 0.8.
    assert best_threshold(labels, scores) == pytest.approx(0.3)


def test_full_ranks_with_ties_never_flatter() -> None:
    scores = np.array([[1.0, 2.0, 2.0, 0.5]])
    assert full_ranks(scores, np.array([1])).tolist() == [1]  # tied with item 2: counted above it
    assert full_ranks(scores, np.array([3])).tolist() == [3]


def test_sequence_loss_uses_only_real_next_items() -> None:
    tf = pytest.importorskip("tensorflow")
    from shopper_profiles.model.encoder import sequence_loss

    hidden = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]]], dtype=np.float32)
    table = np.array([[0, 0], [0, 0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    item_seq = np.array([[0, 2, 1, 3]], dtype=np.int32)  # targets 2, [MASK], 3: positions 0 and 2 count
    loss = float(sequence_loss(tf.constant(hidden), tf.constant(item_seq), tf.constant(table), first_item=2))

    def ce(h: np.ndarray, target: int) -> float:
        logits = table @ h
        return float(np.log(np.exp(logits).sum()) - logits[target])

    assert loss == pytest.approx((ce(hidden[0, 0], 2) + ce(hidden[0, 2], 3)) / 2, rel=1e-5)


def test_an_untrained_wide_model_ranks_shoppers_as_its_rules_do() -> None:
    """Intent, churn and price start at the rule scores the tables hold (a model given the rules'
    inputs begins where the rules are and learns from there); the interests' wide path starts at the
    affinity rule, and its other weights read the 90-day shares, the block before the affinity."""
    pytest.importorskip("tensorflow")
    from scipy.stats import spearmanr
    from shopper_profiles.model.dataset import TABULAR_FEATURES, tabular_width
    from shopper_profiles.model.encoder import WIDE_SCALE
    from shopper_profiles.model.network import RULE_INPUTS, ModelSpec, build_model, predict

    names = [name for name, _, _ in TABULAR_FEATURES]
    n_categories, rows = 4, 64
    width = tabular_width(n_categories)
    model = build_model(ModelSpec(n_items=20, n_tabular=width, n_categories=n_categories, max_len=8,
                                  hidden_size=16, layers=1, wide=True))
    rng = np.random.default_rng(0)
    arrays = {"item_seq": rng.integers(2, 20, (rows, 8)), "type_seq": np.ones((rows, 8), int),
              "time_seq": np.ones((rows, 8), int), "tabular": rng.normal(size=(rows, width))}
    arrays["tabular"][:, len(names):] = rng.dirichlet(np.ones(n_categories), (rows, 2)).reshape(rows, -1)
    out = predict(model, arrays)
    for head, feature in zip(("intent_logit", "churn_logit", "price"), RULE_INPUTS, strict=True):
        rule = arrays["tabular"][:, names.index(feature)]
        assert spearmanr(out[head], rule).statistic > 0.999, head
    shares, affinity = arrays["tabular"][:, width - 2 * n_categories:width - n_categories], arrays["tabular"][:, -n_categories:]
    kernel, bias = model.category_head.get_weights()
    model.category_head.set_weights([np.zeros_like(kernel), np.zeros_like(bias)])  # the wide path alone
    out = predict(model, arrays)
    assert np.array_equal(np.argsort(-out["interest_logits"], axis=1), np.argsort(-affinity, axis=1))
    model.interest_wide.assign(np.array([0.0, 0.0, 1.0, 0.0], np.float32) / WIDE_SCALE)
    assert np.array_equal(np.argsort(-predict(model, arrays)["interest_logits"], axis=1), np.argsort(-shares, axis=1))


def test_the_repeat_aware_path_scores_each_item_by_its_own_events_propensity_and_the_latest_purchase() -> None:
    """The learned repeat evidence lands on the item of each event, by its action and age; the
    return propensity only on items the shopper touched; the latest purchase's followers on them."""
    tf = pytest.importorskip("tensorflow")
    from shopper_profiles.model.dataset import TABULAR_FEATURES
    from shopper_profiles.model.network import PURCHASE_TYPE, REPEAT_SCALE, ModelSpec, build_model, latest_purchase, predict

    n_categories, view = 3, 1
    names = [name for name, _, _ in TABULAR_FEATURES]
    follow = np.zeros((12, 2), np.int32)
    strength = np.zeros((12, 2), np.float32)
    follow[4], strength[4] = [9, 10], [2.0, 1.0]  # 4 is followed by 9 (strongly) and 10
    follow[5], strength[5] = [11, 0], [3.0, 0.0]  # the latest item's followers (the older co-occurrence path)
    follow[6], strength[6] = [8, 0], [1.0, 0.0]
    browsed = (follow.copy(), strength.copy())  # the general followers: after any event of 4, 3 and 11
    browsed[0][4], browsed[1][4] = [3, 11], [2.0, 2.0]
    model = build_model(ModelSpec(n_items=12, n_tabular=len(names) + n_categories, n_categories=n_categories, max_len=5,
                                  hidden_size=8, layers=1, wide=True, neighbours=2, repeat_aware=True, purchase_followers=True),
                        item_category=np.array([-1, -1, 0, 0, 1, 1, 2, 2, -1, 0, 1, 2]), neighbours=browsed,
                        purchase_neighbours=(follow, strength))
    arrays = {"item_seq": np.array([[0, 3, 4, 3, 5], [0, 0, 0, 6, 7]]),
              "type_seq": np.array([[0, view, PURCHASE_TYPE, view, view], [0, 0, 0, PURCHASE_TYPE, view]]),
              "time_seq": np.array([[0, 9, 9, 4, 1], [0, 0, 0, 2, 2]]),
              "tabular": np.zeros((2, len(names) + n_categories))}
    items = tf.constant(arrays["item_seq"], tf.int32)
    bought, age = latest_purchase(items, tf.constant(arrays["type_seq"], tf.int32), tf.constant(arrays["time_seq"], tf.int32))
    assert bought.numpy().tolist() == [4, 6] and age.numpy().tolist() == [9, 2]
    before = predict(model, arrays)["next_item_logits"]
    kernel = np.zeros(model.repeat_kernel.shape, np.float32)
    kernel[PURCHASE_TYPE, 9], kernel[view, 4] = 2.0 / REPEAT_SCALE, 0.5 / REPEAT_SCALE  # a purchase ~2 weeks ago; a view hours ago
    model.repeat_kernel.assign(kernel)
    model.repeat_category.assign(np.array([0.0, 1.0, 0.0, 0.0], np.float32) / REPEAT_SCALE)  # category 1 comes back
    follow_weight = np.zeros(model.purchase_follow.shape, np.float32)
    follow_weight[9], follow_weight[2] = 1.5 / REPEAT_SCALE, 5.0 / REPEAT_SCALE  # only the latest purchase's age counts
    model.purchase_follow.assign(follow_weight)
    delta = predict(model, arrays)["next_item_logits"] - before
    expected = np.zeros((2, 12))
    expected[0, 4] = 2.0 + 1.0  # its purchase at age bucket 9, and category 1 touched
    expected[0, 3] = 0.5  # the view at bucket 4 (the one at bucket 9 has no weight)
    expected[0, 5] = 1.0  # touched, category 1
    expected[0, [9, 10]] = [3.0, 1.5]  # purchase followers of the latest purchase (4), x purchase_follow at its age
    expected[1, 8] = 5.0  # row 1's latest purchase (6) is younger: its own age's weight, not row 0's
    # row 1 touched only category 2, whose propensity is 0
    assert delta[:, 2:] == pytest.approx(expected[:, 2:], abs=1e-4)


def test_followers_as_an_input_match_the_counts_and_never_count_the_pair_being_predicted() -> None:
    tf = pytest.importorskip("tensorflow")
    from shopper_profiles.model.baselines import cooccurrence, top_followers
    from shopper_profiles.model.encoder import follower_cells, recent_items

    histories = [np.array([1, 2, 3]), np.array([1, 2, 4]), np.array([1, 3, 3])]
    follow, strength = top_followers(cooccurrence(histories, 5, window=3), k=2)
    # Followers of 1: 2 (x2), 3 (x3 counting both 3s of the last history) -> 3 first; self-pairs (3 -> 3) aside.
    assert follow[1].tolist() == [3, 2] and strength[1] == pytest.approx(np.log1p([3, 2]))
    assert follow[3].tolist() == [0, 0] and strength[3].tolist() == [0.0, 0.0]
    recent = recent_items(tf.constant([[1, 2]]))[0]  # position 0: [1, 0, 0]; position 1: [2, 1, 0]
    assert recent.numpy().tolist() == [[1, 0, 0], [2, 1, 0]]
    logits = np.zeros((2, 5), np.float32)
    cells, values = follower_cells(recent, tf.constant(follow), tf.constant(strength))
    scored = tf.tensor_scatter_nd_add(logits, cells, values).numpy()
    assert scored[0].tolist() == pytest.approx([0, 0, np.log1p(2), np.log1p(3), 0])
    # Position 1: 2's followers (3: x1, 4: x1) at weight 1, plus 1's at weight 1/2.
    assert scored[1].tolist() == pytest.approx([0, 0, np.log1p(2) / 2, np.log1p(1) + np.log1p(3) / 2, np.log1p(1)])
    # Training on target 3 after [.., 1]: this very pair was counted once, so 1 -> 3 counts 2, not 3.
    cells, values = follower_cells(recent[:1], tf.constant(follow), tf.constant(strength), targets=tf.constant([3]))
    own = tf.tensor_scatter_nd_add(logits[:1], cells, values).numpy()[0]
    assert own[3] == pytest.approx(np.log1p(2)) and own[2] == pytest.approx(np.log1p(2))


def test_a_deeper_input_term_weighs_each_recent_item_one_over_its_distance_and_corrects_only_pairs_it_counted() -> None:
    """The neighbourhood term as an input reads the latest 10 items (weights 1, 1/2, ... 1/10, as its
    baseline sums), and a training target counts one occurrence less only in the rows of recent items
    within the counting window: a pair further apart was never counted."""
    tf = pytest.importorskip("tensorflow")
    from shopper_profiles.model.encoder import follower_cells, recent_items

    n_items = 13
    follow = np.zeros((n_items, 1), np.int32)
    follow[1:12, 0] = 12  # every item's one neighbour: item 12, counted 4 times
    strength = np.where(follow > 0, np.log1p(4.0), 0.0).astype(np.float32)
    recent = recent_items(tf.constant([list(range(1, 12))]), depth=10)[0, -1:]  # latest first: 11, 10, ... 2
    assert recent.numpy().tolist() == [list(range(11, 1, -1))]
    cells, values = follower_cells(recent, tf.constant(follow), tf.constant(strength))
    scored = tf.tensor_scatter_nd_add(np.zeros((1, n_items), np.float32), cells, values).numpy()[0]
    assert scored[12] == pytest.approx(np.log1p(4.0) * sum(1.0 / k for k in range(1, 11)))
    cells, values = follower_cells(recent, tf.constant(follow), tf.constant(strength), targets=tf.constant([12]), window=5)
    own = tf.tensor_scatter_nd_add(np.zeros((1, n_items), np.float32), cells, values).numpy()[0]
    assert own[12] == pytest.approx(np.log1p(3.0) * sum(1.0 / k for k in range(1, 6))
                                    + np.log1p(4.0) * sum(1.0 / k for k in range(6, 11)))


def test_friend_and_search_cues_point_at_the_latest_neighbour_item_and_the_searched_sessions_first_item(spark, store) -> None:
    """Friends' influence: a friend (either way) or a followed account's purchase/share in the 68 h
    before D; not a follower's, not an older one, not one of an account linked after it.
    Search return: the first item of the shopper's latest search-led session in those hours."""
    from datetime import date, datetime

    from shopper_profiles.ingest.bronze import EVENTS, SOCIAL_EDGES
    from shopper_profiles.model.evaluation import social_and_search_cues

    as_of = date(2024, 3, 10)

    def at(day: int, hour: int) -> datetime:
        return datetime(2024, 3, day, hour)

    rows = [  # (user, ts, type, item, session)
        ("ann", at(9, 10), "purchase", "I1", "s1"),  # ann's friend bob sees it
        ("ann", at(5, 10), "purchase", "I9", "s0"),  # too old for anyone
        ("cat", at(9, 12), "share", "I2", "s2"),  # bob follows cat: bob sees it, later than I1
        ("bob", at(9, 13), "purchase", "I3", "s3"),  # friend ann sees it; cat, whom bob follows, does not
        ("dan", at(9, 14), "purchase", "I4", "s4"),  # dan befriended bob only at D
        ("bob", at(8, 9), "search", None, "s5"), ("bob", at(8, 9).replace(minute=1), "view", "I5", "s5"),
        ("bob", at(8, 9).replace(minute=2), "view", "I6", "s5"),
        ("eve", at(9, 20), "search", None, "s6"),  # a search with no item viewed points nowhere
    ]
    events = spark.createDataFrame([
        (f"e{i}", u, ts, ts.date(), t, item, None, None, None, "q" if t == "search" else None, s, "app", "simulator", "l")
        for i, (u, ts, t, item, s) in enumerate(rows)], EVENTS.schema)
    edges = spark.createDataFrame([
        ("ann", "bob", "friend", at(1, 0), "simulator", "l"), ("bob", "cat", "follow", at(1, 0), "simulator", "l"),
        ("dan", "bob", "friend", at(10, 0), "simulator", "l")], SOCIAL_EDGES.schema)
    store.create(EVENTS)
    store.append(events, EVENTS)
    store.create(SOCIAL_EDGES)
    store.append(edges, SOCIAL_EDGES)
    cues = {name: dict(frame.collect()) for name, frame in social_and_search_cues(spark, store, as_of).items()}
    assert cues == {"friend_influence": {"ann": "I3", "bob": "I2"}, "search_return": {"bob": "I5"}}
