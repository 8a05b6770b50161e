"""The leave-one-out sequence benchmark: file reading, the split, the windows, and a real
(small) causal TFBertModel run on a file of that format with a learnable pattern."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_job
from shopper_profiles.model.metrics import full_ranks, ranking_report
from shopper_profiles.model.sequential import (
    FUSION_TERMS,
    FUSION_WEIGHTS,
    CausalSequenceModel,
    SequentialSpec,
    choose_ranking,
    evaluation_inputs,
    member_variants,
    rank_reports,
    read_sequences,
    run_benchmark,
    score_users,
    term_label,
    training_prefixes,
    training_windows,
    variant_ranks,
)


def test_read_sequences_skips_short_users_and_reads_attributes(tmp_path) -> None:
    path = tmp_path / "seq.txt"
    path.write_text("u1 1 2 3 4\nu2 5 6\n\nu3 2 4 6\n")
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({"1": [0, 3], "6": [2]}))
    data = read_sequences(path, attrs)
    assert data.users == ["u1", "u3"] and data.skipped_short == 1  # u2 has 2 items: no leave-one-out
    assert data.n_items == 7  # largest id 6 (+ padding 0); u2's items still count for the catalogue
    assert data.attributes is not None and data.attributes[1].tolist() == [1, 4] and data.attributes[6].tolist() == [3, 0]
    assert data.n_attributes == 5


@pytest.mark.parametrize("line, message", [("u1 1 x 3", "integer item ids"), ("u1 0 1 2", ">= 1")])
def test_read_sequences_names_the_bad_line(tmp_path, line: str, message: str) -> None:
    path = tmp_path / "seq.txt"
    path.write_text(f"u0 1 2 3\n{line}\n")
    with pytest.raises(ValueError, match=rf"seq.txt:2: .*{message}"):
        read_sequences(path)


def test_leave_one_out_split_and_windows_keep_every_training_target() -> None:
    sequences = [np.arange(1, 8, dtype=np.int32), np.array([3, 4, 5], dtype=np.int32)]
    inputs, targets, histories = evaluation_inputs(sequences, 4, "validation")
    assert targets.tolist() == [6, 4] and histories[0].tolist() == [1, 2, 3, 4, 5]
    assert inputs.tolist() == [[2, 3, 4, 5], [0, 0, 0, 3]]
    _, test_targets, test_histories = evaluation_inputs(sequences, 4, "test")
    assert test_targets.tolist() == [7, 5] and test_histories[1].tolist() == [3, 4]
    # Training history of user 0 is 1..5 (validation and test items held out): 4 next-item targets,
    # cut into windows of at most 3 inputs; user 1 (history [3]) has no target.
    x, y = training_windows(sequences, 3)
    assert x.tolist() == [[2, 3, 4], [0, 0, 1]] and y.tolist() == [[3, 4, 5], [0, 0, 2]]
    assert int((y > 0).sum()) == 4
    # Prefixes: the same 4 targets, one example each, the latest item last (as the test input has it),
    # at most 3 items back; the validation and test items never appear.
    x, y = training_prefixes(sequences, 3)
    assert x.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert y.tolist() == [[0, 0, 2], [0, 0, 3], [0, 0, 4], [0, 0, 5]]


def test_overlapping_windows_teach_every_target_once_with_at_least_the_overlap_before_it() -> None:
    """With ``overlap`` a window repeats the last items of the one before it as context only: the
    targets are the prefixes' targets, each once, and every one sees at least ``overlap`` items before
    it in its window (or its whole history, where that is shorter)."""
    max_len, overlap = 8, 5
    sequences = [np.arange(1, n + 1, dtype=np.int32) for n in (40, 12, 5, 23)]  # item k sits at history index k - 1
    x, y = training_windows(sequences, max_len, overlap)
    taught = sorted(int(t) for t in y[y > 0])
    _, prefix_targets = training_prefixes(sequences, max_len)
    assert taught == sorted(int(t) for t in prefix_targets[:, -1])  # each target once (items are unique per user)
    # Per taught cell: its target item (k has k - 1 items before it) and the items before it in its window.
    cells = [(int(y[row, col]), int((x[row, :col + 1] > 0).sum())) for row, col in zip(*np.nonzero(y), strict=True)]
    assert all(seen >= min(overlap, target - 1) for target, seen in cells)
    assert min(seen for target, seen in cells if target > max_len) >= overlap
    # Without overlap a window's first target sees one item; the overlap costs extra rows, no targets.
    x0, y0 = training_windows(sequences, max_len)
    assert int((y0 > 0).sum()) == len(taught) and len(x0) < len(x)
    with pytest.raises(ValueError, match="overlap"):
        training_windows(sequences, max_len, max_len)


def _pattern_file(path, users: int = 400, items: int = 60, seed: int = 0) -> None:
    """Each user walks the catalogue in steps of one from a random start: the next item is
    always the last + 1, a pattern a sequence model must learn and popularity cannot."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(users):
        start, length = int(rng.integers(0, items)), int(rng.integers(5, 12))
        lines.append(" ".join([f"user{user}", *[str((start + k) % items + 1) for k in range(length)]]))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_benchmark_learns_a_sequential_pattern_and_is_tracked(tmp_path) -> None:
    path = tmp_path / "walks.txt"
    _pattern_file(path)
    spec = SequentialSpec(hidden_size=32, layers=1, heads=2, dropout=0.1, batch_size=64, learning_rate=0.005, minutes=2,
                          max_epochs=15, eval_every=5, patience=3, threads=2, ensemble=2)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_benchmark(str(path), None, spec, tracking, "bench-test")
    model, popularity = result["metrics"], result["baselines"]["popularity"]
    assert result["users"] == 400 and result["items"] == 60
    assert {"test_full_ndcg@10", "test_sampled100_ndcg@10", "validation_full_hr@20"} <= set(model)
    assert model["test_full_hr@10"] > 0.9 > popularity["test_full_hr@10"]  # popularity is flat here: ~10/60
    assert result["baselines"]["item_cooccurrence"]["test_full_hr@5"] == 1.0  # the walk is a pure transition
    # Two members from consecutive seeds, each with its own numbers, inside the one budget.
    assert [m["seed"] for m in result["members"]] == [42, 43] and {e["seed"] for e in result["history"]} == {42, 43}
    assert all(m["test"]["test_full_hr@10"] > 0.9 for m in result["members"])
    assert result["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in result["members"]))
    # The ranking is the one validation chose, and the whole ensemble alone is reported beside it.
    ranking = result["ranking"]
    assert ranking["weight"] in FUSION_WEIGHTS and set(ranking["members"]) <= {42, 43}
    assert (ranking["term"] in FUSION_TERMS) == (ranking["weight"] > 0)
    curves = ranking["validation_ndcg@10"]
    labels = {"w 0", *(f"w {w:g} {term}" for w in FUSION_WEIGHTS if w for term in FUSION_TERMS)}
    assert {seeds.count("+") for seeds in curves} == {0, 1} and all(set(c) == labels for c in curves.values())
    chosen = curves["+".join(str(s) for s in sorted(ranking["members"]))][term_label(((), ranking["weight"], ranking["term"]))]
    assert model["validation_full_ndcg@10"] == pytest.approx(chosen) == max(v for c in curves.values() for v in c.values())
    assert result["model_alone"]["validation_full_ndcg@10"] == pytest.approx(curves["42+43"]["w 0"])
    # Each co-occurrence term is also ranked alone as a traditional baseline.
    assert set(result["baselines"]) == {"popularity", "item_cooccurrence", "neighbourhood_cooccurrence"}
    # Paired bootstrap intervals against co-occurrence: each holds its own point estimate.
    cooccurrence = result["baselines"]["item_cooccurrence"]
    for ranking_name, metrics in (("chosen", model), ("everyone", result["model_alone"])):
        for metric in ("ndcg@10", "hr@10"):
            bounds = result["intervals"][ranking_name][metric]
            assert bounds["profile_model"][0] <= metrics[f"test_full_{metric}"] <= bounds["profile_model"][1]
            assert bounds["traditional"][0] <= cooccurrence[f"test_full_{metric}"] <= bounds["traditional"][1]
            point = metrics[f"test_full_{metric}"] / cooccurrence[f"test_full_{metric}"]
            assert bounds["ratio"][0] <= point <= bounds["ratio"][1]
    # The bench section names the chosen ranking and puts the whole ensemble and each member beside it.
    from shopper_profiles.bench import render_sequences

    meta = {"machine": {"cores": 2, "cpu": "test", "memory_gib": 1, "python": "3"}, "master": "local[2]", "commit": "x",
            "date": "today", "command": "pytest"}
    section = render_sequences(result, meta)
    seeds = "+".join(str(s) for s in ranking["members"])
    term = f" {ranking['term']}" if ranking["weight"] else ""
    assert f"Chosen: **seeds {seeds}, w {ranking['weight']:g}{term}**" in section and "the whole ensemble alone (2 seeds" in section
    near_low, near_high = result["intervals_vs_neighbourhood"]["chosen"]["ndcg@10"]["ratio"]
    assert "neighbourhood co-occurrence term alone" in section and f"[{near_low:.2f}, {near_high:.2f}]." in section
    assert f"{model['test_full_ndcg@10']:.4f}" in section and "one member, seed 43 (alone)" in section
    low, high = result["intervals"]["chosen"]["ndcg@10"]["ratio"]
    assert f"[{low:.2f}, {high:.2f}]" in section
    # Each interval sits next to its own ratio (here the chosen ranking and the whole ensemble may tie).
    apart = {**result, "intervals": {"chosen": {"ndcg@10": {"ratio": [0.5, 0.75]}}, "everyone": {"ndcg@10": {"ratio": [0.25, 2.5]}}}}
    apart_section = render_sequences(apart, meta)
    assert f"co-occurrence: **{model['test_full_ndcg@10'] / cooccurrence['test_full_ndcg@10']:.2f}x [0.50, 0.75]" in apart_section
    assert "x [0.25, 2.50] co-occurrence)" in apart_section

    import mlflow

    mlflow.set_tracking_uri(tracking)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["test_full_ndcg_at_10"] == pytest.approx(model["test_full_ndcg@10"])
    assert run.data.metrics["seed43.test_full_ndcg_at_10"] == pytest.approx(result["members"][1]["test"]["test_full_ndcg@10"])
    assert "protocol" in run.data.tags
    assert run.data.metrics["fusion_weight"] == ranking["weight"]
    assert run.data.tags["fusion_term"] == (ranking["term"] or "none")
    assert run.data.tags["ranking_seeds"] == "+".join(str(s) for s in ranking["members"])
    assert run.data.metrics["model_alone.test_full_ndcg_at_10"] == pytest.approx(result["model_alone"]["test_full_ndcg@10"])
    assert run.data.metrics["chosen.ratio_vs_cooccurrence_ndcg_at_10_low"] == pytest.approx(low)


def _choice(members: list[np.ndarray], evidence: np.ndarray | dict[str, np.ndarray], targets: np.ndarray,
            histories: list[np.ndarray], own: list[float]) -> tuple[tuple[tuple[int, ...], float, str], dict]:
    """The chosen ranking and the validation curve; one evidence array serves as the followers term."""
    terms = evidence if isinstance(evidence, dict) else {"followers": evidence}
    variants = member_variants(own, FUSION_WEIGHTS, tuple(terms))
    ranks = variant_ranks(lambda part: {m: a[part] for m, a in enumerate(members)},
                          lambda part: {t: a[part] for t, a in terms.items()}, targets, histories, variants,
                          sampled=False, chunk=64)
    reports = rank_reports(ranks, (10,), "")
    curve = {v: reports[name]["full_ndcg@10"] for name, v in variants.items()}
    return choose_ranking(curve), curve


def test_the_ranking_is_the_one_the_validation_targets_like_best() -> None:
    """Co-occurrence evidence on the target and model scores that are noise: a positive weight wins.
    Evidence on a wrong item: the model alone (0) wins, and a tie goes to the smaller weight. A member
    that is noise is left out when the informed one ranks better alone; only the k best by their own
    validation NDCG@10 are candidates. With two co-occurrence terms, the one whose evidence is on the
    target is chosen, whichever its name."""
    rng = np.random.default_rng(0)
    users, items = 200, 40
    targets = rng.integers(2, items, users).astype(np.int32)
    histories = [np.array([1], dtype=np.int32)] * users
    rows = np.arange(users)
    noise = rng.normal(size=(users, items)).astype(np.float32)
    on_target = np.zeros_like(noise)
    on_target[rows, targets] = 1.0
    (members, weight, term), curve = _choice([noise], on_target, targets, histories, [0.1])
    assert members == (0,) and weight > 0 and term == "followers"
    assert curve[(members, weight, term)] == max(curve.values()) > curve[((0,), 0.0, "")] + 0.3
    elsewhere = np.zeros_like(noise)
    elsewhere[rows, (targets + 1 - 2) % (items - 2) + 2] = 1.0  # another real item, never the target
    informed = noise.copy()
    informed[rows, targets] += 2.0
    (members, weight, _), curve = _choice([informed], elsewhere, targets, histories, [0.1])
    assert weight == 0.0 and curve[((0,), 0.0, "")] > curve[((0,), max(FUSION_WEIGHTS), "followers")], curve
    # Two terms: the one whose evidence is on the target wins, whichever its name.
    both = {"followers": elsewhere, "neighbourhood": on_target}
    (members, weight, term), curve = _choice([noise], both, targets, histories, [0.1])
    assert weight > 0 and term == "neighbourhood" and {t for _, _, t in curve} == {"", "followers", "neighbourhood"}
    assert _choice([noise], {"followers": on_target, "neighbourhood": elsewhere}, targets, histories, [0.1])[0][2] == "followers"
    perfect = noise.copy()
    perfect[rows, targets] += 100.0
    assert _choice([perfect], elsewhere, targets, histories, [0.1])[0] == ((0,), 0.0, "")  # every weight ties at 1.0
    # Two members, one noise: the informed one alone; candidates are {best} and {both}, never {noise}.
    (members, weight, _), curve = _choice([noise * 3, informed], elsewhere, targets, histories, [0.01, 0.2])
    assert (members, weight) == ((1,), 0.0) and {m for m, _, _ in curve} == {(1,), (0, 1)}, curve
    # Two equally perfect members tie everywhere: the plainer ranking, both members at w 0.
    assert _choice([perfect, perfect], elsewhere, targets, histories, [0.3, 0.3])[0] == ((0, 1), 0.0, "")


def test_one_scoring_pass_ranks_each_variant_as_the_protocol_does() -> None:
    """The shared pass masks the shopper's earlier items once per chunk; each variant must rank
    exactly as full_ranks does on its own scores with the history excluded (a repeat target stays
    rankable), chunk boundaries included."""
    rng = np.random.default_rng(1)
    users, items = 150, 30
    members = [rng.normal(size=(users, items)).astype(np.float32) for _ in range(2)]
    evidence = rng.random(size=(users, items)).astype(np.float32)
    targets = rng.integers(1, items, users).astype(np.int32)
    histories = [rng.choice(np.arange(1, items), size=rng.integers(1, 6), replace=False).astype(np.int32) for _ in range(users)]
    histories[0] = np.append(histories[0], targets[0])  # a repeat purchase: the target is in the history
    other = rng.random(size=(users, items)).astype(np.float32)
    terms = {"followers": evidence, "neighbourhood": other}
    variants = {"both fused": ((0, 1), 1.5, "followers"), "second": ((1,), 0.0, ""), "first near": ((0,), 2.0, "neighbourhood")}
    ranks = variant_ranks(lambda part: {m: a[part] for m, a in enumerate(members)},
                          lambda part: {t: a[part] for t, a in terms.items()}, targets, histories, variants,
                          sampled=False, chunk=64)
    reports = rank_reports(ranks, (1, 5, 10), "")
    for name, (chosen, weight, term) in variants.items():
        scores = sum(members[m] for m in chosen) / len(chosen) + (weight * terms[term] if weight else 0.0)
        scores[:, 0] = -np.inf
        expected = ranking_report(full_ranks(scores, targets, exclude=histories), (1, 5, 10), prefix="full_")
        assert reports[name] == pytest.approx(expected), name


@pytest.mark.slow
def test_the_job_runs_on_any_file_of_the_format(tmp_path) -> None:
    path = tmp_path / "walks.txt"
    _pattern_file(path, users=120, items=30, seed=1)
    out = tmp_path / "report.json"
    report = run_job("benchmark_sequences", ["--sequences", str(path), "--minutes", "0.2", "--max-epochs", "1",
                                             "--ensemble", "1", "--out", str(out), "--input-terms", "followers,neighbourhood",
                                             "--conf-override", f"lakehouse.root={tmp_path / 'lh'}"])
    assert [m["epochs"] for m in report["members"]] == [1] and report["attributes_path"] is None
    assert list(report["spec"]["input_terms"]) == ["followers", "neighbourhood"]
    with pytest.raises(ValueError, match="unknown input term.s. basket; choose from followers, neighbourhood"):
        run_job("benchmark_sequences", ["--sequences", str(path), "--input-terms", "followers,basket",
                                        "--conf-override", f"lakehouse.root={tmp_path / 'lh'}"])
    assert json.loads(out.read_text())["metrics"]["test_full_hr@10"] == pytest.approx(report["metrics"]["test_full_hr@10"])


def test_one_encoder_serves_the_profile_model_and_the_benchmark() -> None:
    """Both models run the same encoder layer, and its positions are aligned to the right: a batch
    trimmed of its padding columns gives the latest event the same hidden state as the full one."""
    tf = pytest.importorskip("tensorflow")
    from shopper_profiles.model.network import ModelSpec, build_model

    tf.keras.utils.set_random_seed(3)
    profile = build_model(ModelSpec(n_items=30, n_tabular=8, n_categories=2, max_len=12, hidden_size=16, layers=1))
    benchmark = CausalSequenceModel(SequentialSpec(max_len=12, hidden_size=16, layers=1), 30, None, 0)
    assert type(profile.encoder).__name__ == type(benchmark.encoder).__name__ == "SequenceEncoder"
    items = np.zeros((2, 12), np.int32)
    items[0, -3:], items[1, -5:] = [4, 5, 6], [7, 8, 9, 10, 11]
    for encoder in (profile.encoder, benchmark.encoder):
        full = encoder(tf.constant(items), training=False)[:, -1, :].numpy()
        trimmed = encoder(tf.constant(items[:, -5:]), training=False)[:, -1, :].numpy()
        np.testing.assert_allclose(trimmed, full, atol=1e-5)
    # The profile model's deep next-item scores are the latest hidden state against the tied item table.
    assert profile.item_embedding is profile.encoder.item_embedding


def test_without_positions_each_window_position_reads_as_the_prefix_ending_there() -> None:
    """With no position embeddings a causal window teaches every target from the state the
    evaluation reads (the last position of a left-padded prefix), so windows cost one pass per
    window instead of one per target; with positions the same item sits at another position id."""
    tf = pytest.importorskip("tensorflow")
    window = np.array([[5, 6, 7, 8, 9, 10]], np.int32)
    states = {}
    for positions in (False, True):
        tf.keras.utils.set_random_seed(4)
        model = CausalSequenceModel(SequentialSpec(max_len=6, hidden_size=16, layers=2, positions=positions), 12, None, 0)
        inside = model.encode(tf.constant(window), model.item_table(), training=False)[0].numpy()
        prefixes = np.array([np.concatenate([np.zeros(5 - end, np.int32), window[0, :end + 1]]) for end in range(6)])
        last = model.user_vectors(tf.constant(prefixes)).numpy()
        states[positions] = np.abs(inside - last).max()
    assert states[False] < 1e-5 < states[True]


def test_a_step_holds_about_the_same_number_of_targets_for_windows_as_for_prefixes() -> None:
    """Batches count targets, not rows: a window holds up to max_len targets, so batching windows by
    rows would take a fraction of the prefixes' steps per epoch (on Beauty that cost validation NDCG)."""
    from shopper_profiles.model.sequential import target_batches

    sequences = [np.arange(1, n + 1, dtype=np.int32) for n in (12, 5, 9, 30, 4)]
    prefixes, _ = training_prefixes(sequences, 8)
    window_inputs, window_targets = training_windows(sequences, 8)
    per_window = (window_targets > 0).sum(axis=1)
    assert per_window.sum() == len(prefixes)  # the same targets either way
    by_prefix = target_batches(np.arange(len(prefixes)), np.ones(len(prefixes), int), 10)
    by_window = target_batches(np.arange(len(window_inputs)), per_window, 10)
    assert [len(b) for b in by_prefix] == [10, 10, 10, 10, 5]
    assert np.array_equal(np.concatenate(by_window), np.arange(len(window_inputs)))  # every window once, in order
    sizes = [int(per_window[b].sum()) for b in by_window]
    assert len(by_window) >= len(by_prefix) - 1 and max(sizes) <= 10 + per_window.max() - 1


def test_a_member_scores_log_probabilities_that_differ_by_seed() -> None:
    """An ensemble averages its members' log-softmax, not their raw scores (members' logits differ in
    scale; log-probabilities are comparable): score_users must give log-probabilities. The averaging
    itself is checked in test_one_scoring_pass_ranks_each_variant_as_the_protocol_does."""
    tf = pytest.importorskip("tensorflow")
    members = []
    for seed in (5, 6):
        tf.keras.utils.set_random_seed(seed)
        members.append(CausalSequenceModel(SequentialSpec(max_len=6, hidden_size=16, layers=1, dropout=0.0), 12, None, 0))
    items = np.array([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 7, 1]], np.int32)
    alone = [score_users(m, items) for m in members]
    for one in alone:  # one member's scores are its log-probabilities: they sum to 1 in probability
        np.testing.assert_allclose(np.exp(one).sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(alone[0], alone[1], atol=1e-3)  # different seeds, different members


def test_a_member_still_improving_trains_past_its_share_but_never_past_the_budget() -> None:
    """The ensemble's time rule: inside its share a member trains until patience runs out; past it,
    only while it is improving (train_member: its best pass within the last ``eval_every`` epochs);
    past all the budget left, never."""
    from shopper_profiles.model.sequential import keep_training

    share, limit = 600.0, 1800.0
    assert keep_training(300, share, limit, stale=1, patience=4, improving=False)  # inside its share
    assert not keep_training(300, share, limit, stale=4, patience=4, improving=False)  # patience ran out
    assert keep_training(700, share, limit, stale=0, patience=4, improving=True)  # past its share, improving
    assert not keep_training(700, share, limit, stale=1, patience=4, improving=False)  # past it, stalled
    assert not keep_training(1800, share, limit, stale=0, patience=4, improving=True)  # the whole budget is spent


def test_the_loss_can_leave_out_what_the_shopper_already_had() -> None:
    """With ``seen`` the softmax of each target runs over the items not at or before its position
    (the target itself stays a candidate even if it came before): the candidates the leave-one-out
    protocol ranks. Checked against the cross-entropy written out in numpy."""
    tf = pytest.importorskip("tensorflow")
    from shopper_profiles.model.encoder import next_item_loss

    rng = np.random.default_rng(0)
    items = np.array([[0, 3, 5, 2], [4, 1, 4, 6]], dtype=np.int32)
    targets = np.array([[0, 5, 2, 7], [1, 4, 6, 2]], dtype=np.int32)  # row 1 buys 4 again: it stays a candidate
    hidden, table = rng.normal(size=(2, 4, 5)).astype(np.float32), rng.normal(size=(8, 5)).astype(np.float32)
    present = targets > 0
    expected = []
    for row, col in zip(*np.nonzero(present), strict=True):
        logits = hidden[row, col] @ table.T
        had = {int(i) for i in items[row, :col + 1] if i > 0} - {int(targets[row, col])}
        candidates = [i for i in range(8) if i not in had]
        expected.append(np.log(np.exp(logits[candidates]).sum()) - logits[targets[row, col]])
    got = float(next_item_loss(tf.constant(hidden), tf.constant(targets), tf.constant(present), tf.constant(table),
                               seen=tf.constant(items)))
    plain = float(next_item_loss(tf.constant(hidden), tf.constant(targets), tf.constant(present), tf.constant(table)))
    assert got == pytest.approx(float(np.mean(expected)), rel=1e-5)
    assert got < plain  # fewer candidates, smaller loss


def test_a_ratio_interval_is_read_against_the_target() -> None:
    """The bench section says whether the test users can tell a ratio from its target."""
    from shopper_profiles.bench import against_target

    assert "at or above 1.15x" in against_target(1.15, 1.3, 1.15)
    assert "the data show the miss" in against_target(1.02, 1.149, 1.15)
    assert "cannot tell" in against_target(1.02, 1.16, 1.15)
