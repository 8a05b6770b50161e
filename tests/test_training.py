"""Petastorm shards are disjoint and complete; 2-process Horovod training keeps ranks in sync,
lowers the loss and resumes from its checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession
from shopper_profiles.model.dataset import training_spec
from shopper_profiles.model.inputs import load_shard
from shopper_profiles.storage import DeltaStore

MAX_LEN, N_ITEMS, N_TAB, N_CAT = 8, 40, 5, 4


def synthetic_training_set(spark: SparkSession, store: DeltaStore, users: int = 240, noisy: bool = False) -> list[str]:
    """A learnable toy: the next item is the last item + 1, so the loss must fall. ``noisy``: the
    next-window labels are drawn at random per shopper instead, so a fast learner can only memorise
    the train shoppers and the validation loss must turn up."""
    rng, noise = np.random.default_rng(0), np.random.default_rng(1)
    rows = []
    for u in range(users):
        seq = rng.integers(2, N_ITEMS - 1, size=MAX_LEN).tolist()
        split = "train" if u % 10 < 8 else ("validation" if u % 10 == 8 else "test")
        day = __import__("datetime").date(2024, 1, 1)
        last, before = (int(x) for x in noise.integers(1, N_ITEMS - 1, size=2)) if noisy else (seq[-1], seq[-2])
        rows.append((f"user{u:04d}", day, day, split, seq, [1] * MAX_LEN,
                     [3] * MAX_LEN, rng.normal(size=N_TAB).astype(float).tolist(), last + 1, [last + 1], [last + 1],
                     [last + 1, before + 1, *[0] * (MAX_LEN - 2)],
                     [float(last % N_CAT == c) for c in range(N_CAT)], float(last % 2), float(last % 3 == 0),
                     1.0, int(last % 6), int(last % 3), seq))
    spec = training_spec(MAX_LEN)
    store.create(spec)
    frame = spark.createDataFrame(rows, spec.schema)
    store.overwrite(frame, spec, target_files=6)
    return store.file_uris(spec)


def test_petastorm_shards_are_disjoint_and_cover_everything(spark: SparkSession, store: DeltaStore) -> None:
    files = synthetic_training_set(spark, store)
    everything = load_shard(files)
    shards = [load_shard(files, rank=r, size=2) for r in range(2)]
    ids = [set(s["user_id"].tolist()) for s in shards]
    assert ids[0] and ids[1]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == set(everything["user_id"].tolist())
    assert len(everything["user_id"]) == 240
    assert everything["item_seq"].shape == (240, MAX_LEN)  # list columns arrive as dense arrays
    train = load_shard(files, split="train")
    assert set(train["split"].tolist()) == {"train"} and len(train["user_id"]) == 192


@pytest.mark.slow
def test_two_rank_horovod_training_syncs_lowers_loss_and_resumes(spark: SparkSession, store: DeltaStore, tmp_path) -> None:
    from shopper_profiles.model.launch import run_horovodrun
    from shopper_profiles.model.network import ModelSpec

    files = synthetic_training_set(spark, store)
    params = {
        "files": files, "seed": 3, "learning_rate": 0.005, "batch_size": 16, "epochs": 4, "steps_per_epoch": 6,
        "threads_per_rank": 1, "checkpoint_dir": str(tmp_path / "ckpt"), "weights_path": str(tmp_path / "weights.h5"),
        "model_spec": ModelSpec(n_items=N_ITEMS, n_tabular=N_TAB, n_categories=N_CAT, max_len=MAX_LEN, hidden_size=16,
                                layers=1, heads=2, dropout=0.0).to_dict(),
    }
    (tmp_path / "w").mkdir()
    ranks = run_horovodrun(dict(params, rank_weights_dir=str(tmp_path / "w")), num_proc=2, timeout_s=900)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["size"] == 2 for r in ranks)
    assert ranks[0]["rows"] > 0 and ranks[1]["rows"] > 0 and ranks[0]["rows"] + ranks[1]["rows"] == 192
    # Ranks draw different initial weights (seed + rank); after training every variable is identical.
    rank0, rank1 = (np.load(tmp_path / "w" / f"rank{r}.npz") for r in (0, 1))
    assert rank0.files == rank1.files and len(rank0.files) > 10
    for name in rank0.files:
        assert np.array_equal(rank0[name], rank1[name]), name
    losses = [h["loss"] for h in ranks[0]["history"]]
    assert losses[-1] < losses[0], losses
    assert ranks[0]["steps"] == 24 and (tmp_path / "weights.h5").exists()
    import shutil

    shutil.copytree(tmp_path / "ckpt", tmp_path / "ckpt-killed")  # the 4-epoch checkpoint, for the kill below
    # Interrupted after 4 of 6 epochs: the next run resumes at step 24, runs only epochs 4 and 5, and
    # ends with exactly the weights of an uninterrupted 6-epoch run from scratch (which also shows the
    # training is deterministic given a seed: the first 4 epochs of both runs were the same).
    (tmp_path / "resumed").mkdir()
    (tmp_path / "straight").mkdir()
    resumed = run_horovodrun(dict(params, epochs=6, rank_weights_dir=str(tmp_path / "resumed")), num_proc=2, timeout_s=900)
    assert [h["epoch"] for h in resumed[0]["history"]] == [4, 5]
    assert resumed[0]["steps"] == 36
    straight = run_horovodrun(dict(params, epochs=6, checkpoint_dir=str(tmp_path / "ckpt-straight"), weights_path=None,
                                   rank_weights_dir=str(tmp_path / "straight")), num_proc=2, timeout_s=900)
    assert [h["epoch"] for h in straight[0]["history"]] == list(range(6))
    after_resume, uninterrupted = np.load(tmp_path / "resumed" / "rank0.npz"), np.load(tmp_path / "straight" / "rank0.npz")
    for name in uninterrupted.files:
        assert np.array_equal(after_resume[name], uninterrupted[name]), name
    # Killed (SIGKILL of rank 0) in the middle of epoch 5, from the same 4-epoch checkpoint: the
    # rerun restarts epoch 5 from the last checkpoint and still ends with the uninterrupted weights.
    killed = dict(params, epochs=6, checkpoint_dir=str(tmp_path / "ckpt-killed"), weights_path=None)
    with pytest.raises(RuntimeError, match="horovodrun failed"):
        run_horovodrun(dict(killed, crash_at_step=27), num_proc=2, timeout_s=900)
    (tmp_path / "after-kill").mkdir()
    rerun = run_horovodrun(dict(killed, rank_weights_dir=str(tmp_path / "after-kill")), num_proc=2, timeout_s=900)
    assert [h["epoch"] for h in rerun[0]["history"]] == [4, 5]
    after_kill = np.load(tmp_path / "after-kill" / "rank0.npz")
    for name in uninterrupted.files:
        assert np.array_equal(after_kill[name], uninterrupted[name]), name


@pytest.mark.slow
def test_early_stopping_is_decided_by_rank_0_for_all_ranks_and_registers_the_best_epoch(
        spark: SparkSession, store: DeltaStore, tmp_path) -> None:
    import tensorflow as tf
    from shopper_profiles.model.inputs import validation_batches
    from shopper_profiles.model.launch import run_horovodrun
    from shopper_profiles.model.network import ModelSpec, build_model, multitask_loss

    files = synthetic_training_set(spark, store, noisy=True)
    spec = ModelSpec(n_items=N_ITEMS, n_tabular=N_TAB, n_categories=N_CAT, max_len=MAX_LEN, hidden_size=16, layers=1,
                     heads=2, dropout=0.0, wide=True)
    # Random labels and a learning rate this high make the validation loss turn up within a few
    # epochs (deterministic: fixed seed).
    params = {
        "files": files, "seed": 3, "learning_rate": 0.03, "batch_size": 16, "epochs": 30, "steps_per_epoch": 6,
        "threads_per_rank": 1, "checkpoint_dir": str(tmp_path / "ckpt"), "weights_path": str(tmp_path / "weights.h5"),
        "model_spec": spec.to_dict(), "patience": 2,
    }
    ranks = run_horovodrun(params, num_proc=2, timeout_s=900)
    history = ranks[0]["history"]
    losses = [h["validation_loss"] for h in history]
    best = int(np.argmin(losses))
    assert ranks[0]["best_epoch"] == best
    assert len(history) == best + 3 < 30, losses  # stopped two epochs after the best one ...
    assert len(ranks[1]["history"]) == len(history)  # ... on every rank (rank 0's decision was broadcast)
    assert losses[-1] > losses[best]
    # The weights handed on for registration are the best epoch's, not the last one's.
    model = build_model(spec)
    model.load_weights(str(tmp_path / "weights.h5"))
    validation = load_shard(files, split="validation")
    total = 0.0
    for features, labels in validation_batches(validation, 1024):
        outputs = model(features, training=False)
        total += float(multitask_loss(outputs, labels)[0]) * len(labels["next_item"])  # the heads' losses
    assert abs(total / len(validation["user_id"]) - losses[best]) < 1e-4
    assert tf.reduce_all(tf.equal(model.item_category, N_CAT))  # restored from the weights: no categories in this toy
    # Rerun over the same checkpoint: the run had stopped, so it trains nothing more and keeps the same best epoch.
    again = run_horovodrun(params, num_proc=2, timeout_s=900)
    assert again[0]["history"] == [] and again[0]["best_epoch"] == best


def test_item_followers_match_the_cooccurrence_baseline(spark: SparkSession) -> None:
    """The model's co-occurrence input counts exactly what the item co-occurrence baseline counts
    (followers within 3 events, self-pairs aside), from the examples as of T only."""
    from datetime import date

    from shopper_profiles.model import baselines
    from shopper_profiles.model.tracking import item_followers

    rng = np.random.default_rng(1)
    day, earlier = date(2024, 3, 1), date(2024, 2, 23)
    rows = [(f"u{u}", day, [0] * 3 + rng.integers(2, 12, size=9).tolist()) for u in range(60)]
    rows += [(f"u{u}", earlier, [5, 6] * 6) for u in range(60)]  # another example date: must not count
    frame = spark.createDataFrame(rows, "user_id string, example_date date, item_seq array<int>")
    follow, strength = item_followers(frame, day, 12, k=4)
    counts = baselines.cooccurrence([np.asarray(r[2]) for r in rows if r[1] == day], 12, window=3, first_item=2).toarray()
    np.fill_diagonal(counts, 0)
    for item in range(2, 12):
        expected = sorted(((-c, j) for j, c in enumerate(counts[item]) if c > 0))[:4]
        assert [int(j) for _, j in expected] == follow[item, :len(expected)].tolist(), item
        assert np.allclose(strength[item, :len(expected)], np.log1p([-c for c, _ in expected]))


def test_purchase_followers_count_only_what_follows_a_purchase(spark: SparkSession) -> None:
    """Item 4 is browsed next to 5 in every history and bought, then followed by 9 and 6, in a few: the
    general followers of 4 put 5 first, its purchase followers hold only what came after the purchase
    (both tables from one pass, as training builds them)."""
    from datetime import date

    from shopper_profiles.model.network import PURCHASE_TYPE
    from shopper_profiles.model.tracking import follower_tables, item_followers

    day, view = date(2024, 3, 1), 1
    browsing = ([0, 4, 5, 4, 5, 6], [0, view, view, view, view, view])
    bought = ([0, 4, 5, 4, 9, 6], [0, view, view, PURCHASE_TYPE, view, view])
    rows = [(f"u{u}", day, *(bought if u % 5 == 0 else browsing)) for u in range(40)]
    frame = spark.createDataFrame(rows, "user_id string, example_date date, item_seq array<int>, type_seq array<int>")
    # Both tables from the one self-join, as training counts them, and each alone: the same tables.
    (general, general_strength), (after, strength) = follower_tables(frame, day, 12, k=3, after_types=(None, PURCHASE_TYPE))
    assert general[4, 0] == 5
    assert after[4].tolist() == [6, 9, 0] and strength[4, :2] == pytest.approx(np.log1p([8, 8]))  # ties by item id
    assert not after[5].any()  # 5 was never bought
    for alone, together in ((item_followers(frame, day, 12, k=3), (general, general_strength)),
                            (item_followers(frame, day, 12, k=3, after_type=PURCHASE_TYPE), (after, strength))):
        assert np.array_equal(alone[0], together[0]) and np.array_equal(alone[1], together[1])


@pytest.mark.slow
def test_dp_noise_is_added_once_for_the_global_batch_and_every_rank_applies_the_same() -> None:
    """Two ranks: the noise on the global sum has std sigma*C (once), not sigma*C*sqrt(2) (once per rank)."""
    import horovod

    def noise_worker() -> tuple[float, list[float]]:  # nested: cloudpickle ships it by value to the ranks
        """One DP aggregation of all-zero clipped sums on every rank: what comes back is the noise alone."""
        import os

        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        import horovod.tensorflow as hvd
        import numpy as np
        import tensorflow as tf
        from shopper_profiles.model.privacy import PrivacySpec, noisy_global_mean

        hvd.init()
        tf.random.set_seed(7 + hvd.rank())
        spec = PrivacySpec(l2_norm_clip=2.0, noise_multiplier=1.5, delta=1e-5)
        out = noisy_global_mean([tf.zeros([100_000])], spec, 8, hvd.rank(), hvd.size(),
                                lambda t: hvd.allreduce(t, op=hvd.Sum))
        noise = out[0].numpy() * 8 * hvd.size()  # back to the sum's scale
        return float(np.std(noise) / (spec.noise_multiplier * spec.l2_norm_clip)), noise[:5].tolist()

    (ratio0, head0), (ratio1, head1) = horovod.run(noise_worker, np=2, hosts="localhost:2", use_gloo=True)
    assert head0 == head1 and ratio0 == ratio1
    assert 0.98 < ratio0 < 1.02, ratio0


def test_per_example_gradients_equal_one_tape_per_example_and_clip_to_c() -> None:
    import tensorflow as tf
    from shopper_profiles.model.network import ModelSpec, build_model, multitask_loss
    from shopper_profiles.model.privacy import clip_and_sum, per_example_gradients

    spec = ModelSpec(n_items=N_ITEMS, n_tabular=N_TAB, n_categories=N_CAT, max_len=MAX_LEN, hidden_size=8, layers=1,
                     heads=2, dropout=0.0)
    model = build_model(spec)
    rng = np.random.default_rng(0)
    b = 4
    features = {"item_seq": tf.constant(rng.integers(2, N_ITEMS, (b, MAX_LEN)), tf.int32),
                "type_seq": tf.ones((b, MAX_LEN), tf.int32), "time_seq": tf.fill((b, MAX_LEN), 3),
                "tabular": tf.constant(rng.normal(size=(b, N_TAB)), tf.float32)}
    window = rng.integers(2, N_ITEMS, (b, MAX_LEN))
    labels = {"next_item": tf.constant(window[:, 0], tf.int32), "window_items": tf.constant(window, tf.int32),
              "next_categories": tf.constant(rng.integers(0, 2, (b, N_CAT)), tf.float32),
              "purchase_next": tf.constant([1.0, 0.0, 1.0, 0.0]), "churn_next": tf.constant([0.0, 1.0, 0.0, 0.0]),
              "price_next": tf.constant([1.2, -1.0, 0.8, 1.0]), "age_label": tf.constant([1, -1, 3, 0]),
              "gender_label": tf.constant([0, 1, -1, 1])}
    model(features)

    def loss_of_one(f, lab):
        return multitask_loss(model(f, training=True), lab)[0]

    losses, grads = per_example_gradients(loss_of_one, model.trainable_variables, features, labels)
    for i in range(b):
        one = ({k: v[i:i + 1] for k, v in features.items()}, {k: v[i:i + 1] for k, v in labels.items()})
        with tf.GradientTape() as tape:
            loss = loss_of_one(*one)
        expected = tape.gradient(loss, model.trainable_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        assert abs(float(losses[i]) - float(loss)) < 1e-5
        for got, want in zip(grads, expected, strict=True):
            # float32 at its own precision: the vectorised and the one-example tape sum in different
            # orders (CI saw 1.1e-5 apart on a value of 12.5); a wrong gradient is off by far more
            np.testing.assert_allclose(got[i].numpy(), tf.convert_to_tensor(want).numpy(), rtol=1e-5, atol=1e-5)
    clip = 0.5 * float(np.min(np.sqrt(sum(np.sum(g.numpy().reshape(b, -1) ** 2, axis=1) for g in grads))))
    sums, norms = clip_and_sum(grads, clip)
    for total, g in zip(sums, grads, strict=True):
        scale = np.minimum(1.0, clip / norms.numpy())
        np.testing.assert_allclose(total.numpy(), np.tensordot(scale, g.numpy(), axes=1), rtol=1e-5, atol=1e-7)
    clipped_norms = [np.sqrt(sum(np.sum((g.numpy()[i] * min(1.0, clip / norms.numpy()[i])) ** 2) for g in grads)) for i in range(b)]
    np.testing.assert_allclose(clipped_norms, clip, rtol=1e-5)  # every example was above C here: each now exactly C


@pytest.mark.slow
def test_dp_sgd_training_on_two_ranks_stays_in_sync_and_reports_epsilon(spark: SparkSession, store: DeltaStore, tmp_path) -> None:
    from shopper_profiles.model.launch import run_horovodrun
    from shopper_profiles.model.network import ModelSpec
    from shopper_profiles.model.privacy import PrivacySpec, epsilon

    files = synthetic_training_set(spark, store)
    privacy = {"l2_norm_clip": 1.0, "noise_multiplier": 1.1, "delta": 1e-5}
    params = {
        "files": files, "seed": 3, "learning_rate": 0.005, "batch_size": 16, "epochs": 2, "steps_per_epoch": 6,
        "threads_per_rank": 1, "checkpoint_dir": str(tmp_path / "ckpt"), "weights_path": None, "train_rows": 192,
        "model_spec": ModelSpec(n_items=N_ITEMS, n_tabular=N_TAB, n_categories=N_CAT, max_len=MAX_LEN, hidden_size=16,
                                layers=1, heads=2, dropout=0.1, wide=True).to_dict(), "privacy": privacy,
    }
    (tmp_path / "w").mkdir()
    ranks = run_horovodrun(dict(params, rank_weights_dir=str(tmp_path / "w")), num_proc=2, timeout_s=900)
    rank0, rank1 = (np.load(tmp_path / "w" / f"rank{r}.npz") for r in (0, 1))
    for name in rank0.files:
        assert np.array_equal(rank0[name], rank1[name]), name
    dp = ranks[0]["dp"]
    assert dp["steps"] == 12 and dp["sampling_probability"] == 32 / 192
    assert dp["epsilon"] == epsilon(PrivacySpec(**privacy), 32 / 192, 12) and 0 < dp["epsilon"] < 20
    assert all(np.isfinite(h["loss"]) for h in ranks[0]["history"])


def test_the_static_shape_history_loss_equals_the_masked_one() -> None:
    """DP-SGD's per-example gradients need static shapes: the weighted form must be the same loss."""
    import tensorflow as tf
    from shopper_profiles.model.encoder import sequence_loss

    rng = np.random.default_rng(4)
    hidden = tf.constant(rng.normal(size=(3, MAX_LEN, 6)), tf.float32)
    table = tf.constant(rng.normal(size=(N_ITEMS, 6)), tf.float32)
    items = rng.integers(2, N_ITEMS, (3, MAX_LEN))
    items[0, :5] = 0  # padding
    items[2, 3] = 1  # an item-less event
    item_seq = tf.constant(items, tf.int32)
    masked = float(sequence_loss(hidden, item_seq, table, first_item=2))
    dense = float(sequence_loss(hidden, item_seq, table, first_item=2, masked=False))
    assert abs(masked - dense) < 1e-5 and masked > 0


@pytest.mark.parametrize("layout", ["affinity only", "shares then affinity"])
def test_refitted_heads_are_the_exact_linear_fits_and_a_refit_that_validates_worse_is_not_kept(layout: str) -> None:
    """The refit writes each fitted linear model into the head's layers exactly (the model's own outputs
    give the validation loss the fit reported, which catches a wrong column or a missing WIDE_SCALE),
    lifts the heads whose labels the inputs carry, and leaves a head alone where the refit validates
    worse (here gender: every validation shopper is class 0, which the trained head already says, while
    the training labels split by a feature). With the 90-day share block, the interests follow the
    shares, not the affinity: the refit must weigh the block the network reads there."""
    from shopper_profiles.model.dataset import TABULAR_FEATURES, tabular_width
    from shopper_profiles.model.heads import HEADS, INTEREST, _loss, _rows, _target, refit_heads, weights
    from shopper_profiles.model.network import ModelSpec, build_model, predict

    rng = np.random.default_rng(5)
    n_tab = N_TAB if layout == "affinity only" else tabular_width(N_CAT)
    interest_block = slice(n_tab - N_CAT, n_tab) if layout == "affinity only" else slice(n_tab - 2 * N_CAT, n_tab - N_CAT)
    # the price level follows a price-evidence column where the tables have the release layout (the
    # head reads only those there, heads.PRICE_EVIDENCE), else the first column
    names = [name for name, _, _ in TABULAR_FEATURES]
    priced = 0 if layout == "affinity only" else names.index("item_price_level_90d")

    def arrays(rows: int, one_gender: bool) -> dict[str, np.ndarray]:
        tab = rng.normal(size=(rows, n_tab)).astype(np.float32)
        gender = (tab[:, 4] > 0).astype(np.int64)
        return {"item_seq": rng.integers(2, N_ITEMS, size=(rows, MAX_LEN)), "type_seq": np.ones((rows, MAX_LEN), np.int64),
                "time_seq": np.full((rows, MAX_LEN), 3), "tabular": tab,
                "price_next": np.exp(0.3 * tab[:, priced] + rng.normal(0, 0.05, rows)).astype(np.float32),
                "purchase_next": (tab[:, 1] + rng.normal(0, 0.3, rows) > 0).astype(np.float32),
                "churn_next": (tab[:, 2] > 0.5).astype(np.float32),
                "next_categories": (tab[:, interest_block] + rng.normal(0, 0.3, (rows, N_CAT)) > 0.5).astype(np.float32),
                "age_label": np.where(rng.random(rows) < 0.2, -1, np.digitize(tab[:, 3], [-1.0, -0.3, 0.3, 1.0])),
                "gender_label": np.zeros_like(gender) if one_gender else gender,
                "window_items": np.where(np.arange(MAX_LEN) < rng.integers(0, MAX_LEN, (rows, 1)), 2, 0)}

    train, validation = arrays(600, False), arrays(300, True)
    spec = ModelSpec(n_items=N_ITEMS, n_tabular=n_tab, n_categories=N_CAT, max_len=MAX_LEN, hidden_size=16, layers=1,
                     heads=2, dropout=0.0, wide=True)
    model = build_model(spec)
    assert spec.category_shares == (layout != "affinity only")
    kernel, bias = model.gender_head.get_weights()  # a head that already says "class 0", as the validation users are
    model.gender_head.set_weights([np.zeros_like(kernel), np.array([10.0, 0.0, -30.0], np.float32)])
    inputs = ("item_seq", "type_seq", "time_seq", "tabular")
    before = predict(model, {k: validation[k] for k in inputs})
    report, fitted = refit_heads(model, train, validation, ("price",))
    after = predict(model, {k: validation[k] for k in inputs})
    # The training rows' outputs it hands back are what the refitted model itself gives.
    assert fitted["price"] == pytest.approx(predict(model, {k: train[k] for k in inputs})["price"], abs=1e-4)
    assert {h for h, r in report.items() if r["kept"] and h != "next_items"} == {"price", "intent", "churn", "age_band",
                                                                                "interests"}, report
    assert "validation_recall_at_20_trained" in report["next_items"]  # the repeat weight was judged (its own test below)
    interests = _loss(INTEREST, validation["next_categories"].reshape(-1), after["interest_logits"].reshape(-1))
    assert interests == pytest.approx(report["interests"]["validation_loss_refit"], rel=1e-3)
    for head in HEADS:
        rows = _rows(head, validation[head.label])
        measured = _loss(head, _target(head, validation[head.label][rows]), after[head.output][rows],
                         weights(head, validation, rows))
        found = report[head.name]
        expected = found["validation_loss_refit"] if found["kept"] else found["validation_loss_trained"]
        assert measured == pytest.approx(expected, rel=1e-3, abs=1e-5), head.name
    assert report["price"]["validation_loss_refit"] < 0.01 < report["price"]["validation_loss_trained"]
    assert np.array_equal(after["gender_logits"], before["gender_logits"])  # not kept: untouched


def _price_shoppers(rng: np.random.Generator, tab: np.ndarray, level: np.ndarray, window_items: np.ndarray) -> dict[str, np.ndarray]:
    """Training arrays for shoppers with these tables, log price levels and label windows (no other labels)."""
    rows = len(tab)
    return {"item_seq": rng.integers(2, N_ITEMS, size=(rows, MAX_LEN)), "type_seq": np.ones((rows, MAX_LEN), np.int64),
            "time_seq": np.full((rows, MAX_LEN), 3), "tabular": tab, "price_next": np.exp(level).astype(np.float32),
            "window_items": window_items, "user_id": np.arange(rows), "purchase_next": np.zeros(rows, np.float32),
            "churn_next": np.zeros(rows, np.float32), "next_categories": np.zeros((rows, N_CAT), np.float32),
            "age_label": np.full(rows, -1), "gender_label": np.full(rows, -1)}


def _refitted_price(train: dict[str, np.ndarray], validation: dict[str, np.ndarray],
                    probe: dict[str, np.ndarray]) -> tuple[dict[str, Any], np.ndarray]:
    """The price head's refit report on a fresh wide model, and its price output on ``probe``."""
    from shopper_profiles.model.heads import refit_heads
    from shopper_profiles.model.network import ModelSpec, build_model, predict

    model = build_model(ModelSpec(n_items=N_ITEMS, n_tabular=train["tabular"].shape[1], n_categories=N_CAT, max_len=MAX_LEN,
                                  hidden_size=16, layers=1, heads=2, dropout=0.0, wide=True))
    report, _ = refit_heads(model, train, validation)
    return report["price"], predict(model, {k: probe[k] for k in ("item_seq", "type_seq", "time_seq", "tabular")})["price"].reshape(-1)


@pytest.mark.parametrize("windows", ["items the shopper has had", "items the shopper never had"])
def test_the_next_item_repeat_weight_moves_to_the_best_validation_recall_and_nothing_else_moves(windows: str) -> None:
    """The refit's one change to the next-item logits: log1p(times in the sequence) weighed more where
    the next windows repeat the history (here on a network whose trained weight on it is zero), less
    where they hold only new items; every logit moves by exactly shift x log1p(count), and no other
    output moves."""
    from shopper_profiles.model.encoder import WIDE_SCALE
    from shopper_profiles.model.heads import refit_repeat_weight
    from shopper_profiles.model.network import ModelSpec, build_model, predict

    rng, n_items, rows = np.random.default_rng(17), 200, 300
    model = build_model(ModelSpec(n_items=n_items, n_tabular=N_TAB, n_categories=N_CAT, max_len=MAX_LEN, hidden_size=16,
                                  layers=1, heads=2, dropout=0.0, wide=True))
    repeats = windows == "items the shopper has had"
    if repeats:  # a network that learned to give the counts no weight
        model.item_wide.assign(model.item_wide * np.array([1, 1, 0, 1, 1, 1], np.float32))
    items = rng.integers(2, n_items, size=(rows, MAX_LEN))
    items[:, :3] = items[:, 3:4]  # one item four times
    unseen = np.array([[i for i in rng.permutation(np.arange(2, n_items)) if i not in row][:MAX_LEN] for row in items])
    validation = {"item_seq": items, "type_seq": np.ones_like(items), "time_seq": np.full_like(items, 3),
                  "tabular": rng.normal(size=(rows, N_TAB)).astype(np.float32),
                  "window_items": items if repeats else unseen}
    inputs = ("item_seq", "type_seq", "time_seq", "tabular")
    before = predict(model, {k: validation[k] for k in inputs})
    found = refit_repeat_weight(model, validation)
    after = predict(model, {k: validation[k] for k in inputs})
    assert found["kept"] and (found["shift"] > 0 if repeats else found["shift"] < 0), found
    assert found["validation_recall_at_20_refit"] > found["validation_recall_at_20_trained"]
    counts = np.zeros((rows, n_items))
    np.add.at(counts, (np.repeat(np.arange(rows), MAX_LEN), items.reshape(-1)), 1.0)
    moved = after["next_item_logits"] - before["next_item_logits"]
    np.testing.assert_allclose(moved, found["shift"] * np.log1p(counts), atol=1e-4)
    assert float(model.item_wide.numpy()[2]) * WIDE_SCALE == pytest.approx((1.0 if not repeats else 0.0) + found["shift"], abs=1e-5)
    for name in ("interest_logits", "price", "intent_logit", "churn_logit", "user_embedding"):
        assert np.array_equal(after[name], before[name]), name


def test_the_price_refit_weighs_each_shopper_by_the_label_windows_items() -> None:
    """A window's price level over one item is mostly that item's price: here the one-item windows
    say the opposite of the many-item ones, and are the majority. Weighted by the window's items, the
    refit follows the many-item windows (unweighted it would follow the majority)."""
    rng = np.random.default_rng(7)

    def arrays(rows: int) -> dict[str, np.ndarray]:
        tab = rng.normal(size=(rows, N_TAB)).astype(np.float32)
        many = rng.random(rows) < 0.3
        level = np.where(many, 0.3, -0.3) * tab[:, 0] + rng.normal(0, 0.05, rows)
        return _price_shoppers(rng, tab, level, np.where(many[:, None], np.full((rows, MAX_LEN), 5),
                                                         np.eye(MAX_LEN, dtype=int)[0] * 5))

    probe = arrays(200)
    report, price = _refitted_price(arrays(800), arrays(400), probe)
    assert report["kept"], report
    assert np.corrcoef(price, probe["tabular"][:, 0])[0, 1] > 0.9


def test_the_price_refit_reads_the_price_evidence_not_activity() -> None:
    """The next window's price level also follows which items it holds, which activity predicts:
    here the label follows a shopper's visit count as strongly as the item price level. The refitted
    price head follows the level and gives the count no weight: a shopper is not price sensitive for
    visiting often."""
    from shopper_profiles.model.dataset import TABULAR_FEATURES, tabular_width

    names = [name for name, _, _ in TABULAR_FEATURES]
    level, visits = names.index("item_price_level_90d"), names.index("frequency_90d")
    rng = np.random.default_rng(11)

    def arrays(rows: int) -> dict[str, np.ndarray]:
        tab = rng.normal(size=(rows, tabular_width(N_CAT))).astype(np.float32)
        label = 0.3 * tab[:, level] - 0.3 * tab[:, visits] + rng.normal(0, 0.05, rows)
        return _price_shoppers(rng, tab, label, np.full((rows, MAX_LEN), 5))

    probe = arrays(300)
    report, price = _refitted_price(arrays(600), arrays(300), probe)
    assert report["kept"], report
    assert np.corrcoef(price, probe["tabular"][:, level])[0, 1] > 0.95
    assert abs(np.corrcoef(price, probe["tabular"][:, visits])[0, 1]) < 0.1


def test_the_price_form_is_chosen_by_folds_that_keep_each_shopper_whole() -> None:
    """A label that follows one column under heavy noise, with 40 noise columns, each shopper's row
    twice (two example dates): folds that split a shopper would reward memorising the noise; folds
    by shopper choose the one column."""
    from shopper_profiles.model.heads import HEADS, _cross_validated

    rng = np.random.default_rng(3)
    shoppers = 150
    x = rng.normal(size=(shoppers, 41))
    y = 0.2 * x[:, 0] + rng.normal(0, 1.0, shoppers)
    x, y, users = np.repeat(x, 2, axis=0), np.repeat(y, 2), np.repeat(np.arange(shoppers), 2)
    forms = [("all", np.arange(41)), ("rule input", np.array([0]))]
    price = next(h for h in HEADS if h.name == "price")
    assert _cross_validated(price, forms, x, y, None, users)[0] == "rule input"
    assert _cross_validated(price, forms, x, y, None, np.arange(len(y)))[0] == "all"  # rows split: the noise leaks


def test_the_price_form_with_fewer_inputs_wins_inside_one_standard_error() -> None:
    """A second input whose gain is inside the folds' noise is not taken (the one-standard-error rule);
    one that carries half the label is."""
    from shopper_profiles.model.heads import HEADS, _cross_validated

    rng = np.random.default_rng(8)
    x = rng.normal(size=(400, 2))
    forms = [("both", np.array([0, 1])), ("first", np.array([0]))]
    price = next(h for h in HEADS if h.name == "price")
    faint = 0.5 * x[:, 0] + 0.03 * x[:, 1] + rng.normal(0, 0.5, 400)
    strong = 0.5 * x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.5, 400)
    assert _cross_validated(price, forms, x, faint, None, np.arange(400))[0] == "first"
    assert _cross_validated(price, forms, x, strong, None, np.arange(400))[0] == "both"


def test_the_tables_carry_the_scalars_then_per_category_the_90_day_share_then_the_affinity(spark: SparkSession) -> None:
    """The layout the network's wide paths read by position: a swapped block would feed the share
    weights the affinity (and the next-item path the share)."""
    from datetime import date

    from pyspark.sql import functions as F
    from shopper_profiles.model.dataset import TABULAR_FEATURES, tabular_inputs, tabular_names, tabular_width

    scalars = [name for name, _, _ in TABULAR_FEATURES]
    row = {"user_id": "u1", "snapshot_date": date(2024, 1, 1), **{name: 2.0 for name in scalars},
           "category_share_90d": {"books": 0.75, "home": 0.25}, "category_affinity_90d": {"home": 0.9, "toys": 0.1},
           "age_band": "25-34", "gender": "female", "age_band_imputed": False, "gender_imputed": True}
    frame = spark.createDataFrame([row])
    keys = ("user_id", "snapshot_date")
    basic = frame.select(*keys, "age_band", "gender", "age_band_imputed", "gender_imputed")
    behaviour = frame.select(*keys, *scalars, "category_share_90d")
    need = frame.select(*keys, "category_affinity_90d")
    social = frame.select(*keys, F.lit(0).alias("unused"))
    categories = ("books", "home", "toys")
    (out,) = tabular_inputs(basic, behaviour, need, social, categories).collect()
    assert len(out.tabular) == tabular_width(len(categories)) == len(tabular_names(categories))
    assert out.tabular[len(scalars):] == pytest.approx([0.75, 0.25, 0.0, 0.0, 0.9, 0.1])
    assert tabular_names(categories)[len(scalars)] == "category_share_90d[books]"
    assert (out.age_label, out.gender_label) == (1, -1)  # a stated age band; an imputed gender is no label


def test_a_model_trained_on_tables_of_another_layout_is_refused_saying_to_retrain() -> None:
    """A model from before the 90-day shares would read the affinity where its weights expect
    other values: the registry refuses it with what to do, before any score is written."""
    from datetime import date

    from shopper_profiles.model.dataset import tabular_width
    from shopper_profiles.model.registry import RegisteredModel
    from shopper_profiles.model.vocabulary import Vocabulary

    vocabulary = Vocabulary(snapshot=date(2024, 1, 1), item_ids=(None, None, "I1"), titles=(None, None, "a"),
                            item_category=np.array([-1, -1, 0]), categories=("beauty", "home"))

    def registered(n_tabular: int) -> RegisteredModel:
        return RegisteredModel(name="m", version="1", run_id="r", training_snapshot=date(2024, 1, 1),
                               vocab_fingerprint=vocabulary.fingerprint, spec={"n_tabular": n_tabular})

    registered(tabular_width(2)).check_usable(date(2024, 1, 2), vocabulary)
    width = tabular_width(2)
    with pytest.raises(ValueError, match=rf"reads {width - 2} table values per shopper, but this release builds {width} .* retrain it"):
        registered(tabular_width(2) - 2).check_usable(date(2024, 1, 2), vocabulary)


def test_a_title_is_embedded_once_whatever_its_batch_and_untitled_items_keep_their_random_start() -> None:
    from shopper_profiles.model.network import title_embeddings

    titles = [None, "Lumix Compact camera", "Lumix Compact camera", "lens cap", "Beawise Premium serum set of 3", ""]
    batched = title_embeddings(titles, 16, seed=3)
    alone = title_embeddings(titles, 16, seed=3, batch=1)  # no padding at all
    np.testing.assert_allclose(batched, alone, atol=1e-5)  # padding is masked out of the mean
    np.testing.assert_array_equal(batched[1], batched[2])
    blank = title_embeddings([None] * len(titles), 16, seed=3)  # every item's small random start
    np.testing.assert_array_equal(batched[[0, 5]], blank[[0, 5]])
    assert not np.isclose(batched[1:5], blank[1:5]).all(axis=1).any()  # no titled item keeps its random start
