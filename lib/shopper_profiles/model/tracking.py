"""Train with Horovod, then track everything in MLflow and register the model.

Logged per run: parameters, per-epoch loss, the Delta versions of every table read (lineage),
the git commit, a training-curve PNG, validation metrics, and the model as an MLflow pyfunc
with a signature, registered under ``mlflow.registered_model``. A model whose validation
next-item NDCG@10 is at least the current champion's takes the ``champion`` alias; earlier
versions keep their version numbers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopper_profiles.config import PROJECT_ROOT, Config, node_url
from shopper_profiles.ingest.bronze import AGE_BANDS, GENDERS
from shopper_profiles.model.dataset import FIRST_ITEM, VOCAB, training_spec
from shopper_profiles.model.inputs import SEQUENCE_INPUTS, load_shard
from shopper_profiles.model.metrics import binary_report, full_ranks, ranking_report
from shopper_profiles.model.network import ModelSpec, price_ratio
from shopper_profiles.model.registry import CHAMPION, TRAINING_SNAPSHOT_TAG, VOCAB_FINGERPRINT_TAG, use_experiment
from shopper_profiles.model.vocabulary import Vocabulary
from shopper_profiles.storage import DeltaStore

logger = logging.getLogger(__name__)


def _pyfunc_class() -> type:
    """The MLflow pyfunc (defined lazily so importing this module does not import mlflow)."""
    import mlflow.pyfunc

    base: Any = mlflow.pyfunc.PythonModel

    class ProfileModelWrapper(base):
        """Scores users: in go sequences and tabular features, out the user embedding and profile."""

        def load_context(self, context: Any) -> None:
            os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
            from shopper_profiles.model.network import build_model

            spec = ModelSpec(**json.loads(Path(context.artifacts["spec"]).read_text()))
            self.model = build_model(spec)
            self.model.load_weights(context.artifacts["weights"])

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
            import tensorflow as tf

            from shopper_profiles.model.network import predict

            out = predict(self.model, {k: np.stack(model_input[k].to_numpy()) for k in (*SEQUENCE_INPUTS, "tabular")})
            return pd.DataFrame({
                "user_embedding": list(out["user_embedding"]),
                "top_items": list(tf.math.top_k(out["next_item_logits"], k=10).indices.numpy()),
                "interests": list(tf.sigmoid(out["interest_logits"]).numpy()),
                "purchase_intent": tf.sigmoid(out["intent_logit"]).numpy(),
                "churn_risk": tf.sigmoid(out["churn_logit"]).numpy(),
                "price_sensitivity": price_ratio(out),
            })

    return ProfileModelWrapper


SERVING_DISTRIBUTIONS = ("shopper-profiles", "mlflow", "cloudpickle", "numpy", "pandas", "tensorflow-cpu", "tensorflow", "tf-keras",
                         "transformers", "h5py")


def serving_requirements() -> list[str]:
    """What loading the logged model needs, pinned to the versions that trained it. Declared, not
    inferred: MLflow's inference loads the model in a subprocess (tens of seconds with TensorFlow)
    and still missed tensorflow and transformers, which the wrapper imports lazily."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in SERVING_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:  # e.g. tensorflow (GPU build) instead of tensorflow-cpu on a cluster
            continue
    return pins


def mlflow_name(metric: str) -> str:
    """MLflow metric names allow no '@': ``val_full_ndcg@10`` -> ``val_full_ndcg_at_10``."""
    return metric.replace("@", "_at_")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def validation_metrics(weights: str, spec: ModelSpec, data: dict[str, np.ndarray], figures: Path | None = None) -> dict[str, float]:
    """Validation-user metrics; with ``figures``, also the calibration and confusion plots there."""
    import tensorflow as tf

    from shopper_profiles.model.network import build_model, predict

    if not data:
        return {}
    model = build_model(spec)
    model.load_weights(weights)
    out = predict(model, data)
    metrics: dict[str, float] = {}
    has_next = data["next_item"] >= 0
    if has_next.any():
        logits = out["next_item_logits"][has_next]
        logits[:, :2] = -np.inf  # pad and mask are never recommendations
        ranks = full_ranks(logits, data["next_item"][has_next])
        metrics.update(ranking_report(ranks, prefix="val_full_"))
    intent_p = tf.sigmoid(out["intent_logit"]).numpy()
    churn_p = tf.sigmoid(out["churn_logit"]).numpy()
    expected = float(tf.reduce_sum(tf.sigmoid(out["interest_logits"])))
    if expected > 0:  # category demand sums these probabilities: how far off their total is
        metrics["val_interest_calibration"] = float(np.sum(data["next_categories"])) / expected
    intent = binary_report(data["purchase_next"], intent_p, prefix="val_intent_")
    churn = binary_report(data["churn_next"], churn_p, prefix="val_churn_")
    metrics.update({k: v for k, v in {**intent, **churn}.items() if not math.isnan(v)})
    if figures is not None:
        from shopper_profiles.model.plots import calibration_plot, confusion_plot

        calibration_plot({"purchase intent": (data["purchase_next"], intent_p), "churn": (data["churn_next"], churn_p)},
                         figures / "calibration.png")
        for name, label, logits_key, classes in (("age_band", "age_label", "age_logits", AGE_BANDS),
                                                 ("gender", "gender_label", "gender_logits", GENDERS)):
            known = data[label] >= 0
            if known.any():
                predicted = out[logits_key][known].argmax(axis=1)
                confusion_plot(data[label][known], predicted, list(classes), f"{name} (validation users)",
                               figures / f"confusion_{name}.png")
    return metrics


def history_popularity(training_set: Any, as_of: date, n_items: int) -> np.ndarray:
    """How often each token occurs in the input histories of the examples as of T = ``as_of`` (every
    user: all of it is known at T), the popularity the wide path and the popularity baseline both
    start from."""
    from pyspark.sql import functions as F

    counts = np.zeros(n_items, dtype=np.float32)
    latest = training_set.where(F.col("example_date") == F.lit(as_of))
    rows = latest.select(F.explode("item_seq").alias("item")).where(F.col("item") >= FIRST_ITEM).groupBy("item").count()
    for row in rows.collect():
        if row["item"] < n_items:
            counts[row["item"]] = row["count"]
    return counts


def item_followers(training_set: Any, as_of: date, n_items: int, k: int, window: int = 3,
                   after_type: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per token its ``k`` most frequent followers and log1p of their counts: one table of
    :func:`follower_tables`."""
    return follower_tables(training_set, as_of, n_items, k, window, (after_type,))[0]


def follower_tables(training_set: Any, as_of: date, n_items: int, k: int, window: int = 3,
                    after_types: tuple[int | None, ...] = (None,)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per ``after_types`` entry, per token its ``k`` most frequent followers (another item within
    ``window`` events after it in one history, as the co-occurrence baseline counts them; with a
    type, only after an event of that type token) and log1p of those counts, from the input
    histories of the examples as of T = ``as_of``. All tables come from one self-join in Spark; only
    n_items x k per table returns."""
    from functools import reduce
    from operator import or_

    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    tables = [(np.zeros((n_items, max(k, 1)), dtype=np.int32), np.zeros((n_items, max(k, 1)), dtype=np.float32))
              for _ in after_types]
    if not k:
        return tables
    examples = training_set.where(F.col("example_date") == F.lit(as_of))
    if any(t is not None for t in after_types):
        steps = examples.select("user_id", F.posexplode(F.arrays_zip("item_seq", "type_seq")).alias("pos", "step")).select(
            "user_id", "pos", F.col("step.item_seq").alias("item"), F.col("step.type_seq").alias("type"))
    else:
        steps = examples.select("user_id", F.posexplode("item_seq").alias("pos", "item"))
    steps = steps.where(F.col("item") >= FIRST_ITEM)
    a, b = steps.alias("a"), steps.alias("b")
    pairs = a.join(b, (F.col("a.user_id") == F.col("b.user_id")) & (F.col("b.pos") > F.col("a.pos"))
                   & (F.col("b.pos") <= F.col("a.pos") + window) & (F.col("a.item") != F.col("b.item")))
    counts = pairs.groupBy(F.col("a.item").alias("item"), F.col("b.item").alias("next")).agg(*[
        (F.count(F.lit(1)) if t is None else F.sum((F.col("a.type") == t).cast("long"))).alias(f"c{n}")
        for n, t in enumerate(after_types)])
    for n in range(len(after_types)):
        order = Window.partitionBy("item").orderBy(F.desc(f"c{n}"), "next")
        counts = counts.withColumn(f"r{n}", F.when(F.col(f"c{n}") > 0, F.row_number().over(order)))
    kept = counts.where(reduce(or_, [F.col(f"r{n}") <= k for n in range(len(after_types))]))
    for row in kept.collect():
        if row["item"] >= n_items or row["next"] >= n_items:
            continue
        for n, (follow, strength) in enumerate(tables):
            rank = row[f"r{n}"]
            if rank is not None and rank <= k:
                follow[row["item"], rank - 1] = row["next"]
                strength[row["item"], rank - 1] = np.log1p(row[f"c{n}"])
    return tables


def _training_code_fingerprint() -> str:
    """Hash of the code that shapes the weights; read through the import system (``inspect``),
    not the file system, as under ``spark-submit --py-files`` the modules live inside a wheel."""
    import hashlib
    import inspect

    from shopper_profiles.model import encoder, inputs, network, train

    digest = hashlib.sha256()
    for module in (encoder, network, train, inputs):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


def checkpoint_dir(config: Config, as_of: date, params: dict[str, Any], data_version: int, vocab_fingerprint: str) -> str:
    """A durable checkpoint folder per training job under the lakehouse root, keyed by what decides
    the weights (model spec, seed, batch layout, the training set's Delta version, the vocabulary;
    not the epoch count): rerunning an interrupted job resumes it, and asking for more epochs
    continues the same run."""
    import hashlib

    decisive = {k: params[k] for k in ("seed", "learning_rate", "batch_size", "steps_per_epoch", "model_spec")}
    if params.get("privacy"):  # a DP run never resumes a non-DP checkpoint (or one with other noise)
        decisive["privacy"] = params["privacy"]
    # The data files themselves (a rebuilt table starts its versions again at 0) and the training
    # code: a checkpoint written by other code or from other files must never be resumed.
    decisive.update(data_version=data_version, vocab=vocab_fingerprint, text_init=bool(params.get("item_init")),
                    files=sorted(os.path.basename(f) for f in params["files"]), code=_training_code_fingerprint())
    key = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.checkpoint_root}/{as_of}-{key}"


def train_and_register(store: DeltaStore, config: Config, as_of: date, num_proc: int = 2,
                       launcher: str = "horovodrun", epochs: int | None = None) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.models import infer_signature

    from shopper_profiles.model.launch import run_horovod_spark, run_horovodrun

    m = config.model
    spec_table = training_spec(m.max_len)
    training = store.read(spec_table)
    snapshot = training.where(training.snapshot_date == as_of)
    counts: dict[str, int] = dict(snapshot.groupBy("split").count().collect())
    if not counts.get("train"):
        raise ValueError(f"no training rows for {as_of}; run jobs/build_training_set.py --as-of {as_of} first")
    vocabulary = Vocabulary.load(store, as_of)
    n_items = vocabulary.n_items
    first = snapshot.select("next_categories", "tabular").limit(1).collect()[0]
    n_categories, n_tabular = len(first["next_categories"]), len(first["tabular"])
    spec = ModelSpec(n_items=n_items, n_tabular=n_tabular, n_categories=n_categories, max_len=m.max_len,
                     hidden_size=m.hidden_size, layers=m.layers, heads=m.heads, dropout=m.dropout, wide=m.wide,
                     neighbours=m.neighbours if m.wide else 0, repeat_aware=m.wide and m.repeat_aware,
                     purchase_followers=m.wide and m.repeat_aware and m.purchase_followers)
    # Only this snapshot's files: the reader must not see other snapshots' rows.
    def snapshot_files() -> list[str]:
        return [node_url(f) for f in store.file_uris(spec_table) if f"snapshot_date={as_of}" in f]

    files = snapshot_files()
    if len(files) < num_proc:  # compacted by maintain_tables or rewritten by an erasure since it was built
        from shopper_profiles.model.build import TRAINING_FILES

        spread = max(TRAINING_FILES, num_proc)
        logger.info("training set %s is in %d file(s) for %d ranks; spreading it over %d again", as_of, len(files),
                    num_proc, spread)
        store.overwrite(snapshot.localCheckpoint(), spec_table, window={"snapshot_date": as_of}, target_files=spread)
        files = snapshot_files()
    # Every file a rank opens lives where every node can reach it: ranks under horovod.spark.run
    # run on executors, whose own temp folders the driver cannot read (and vice versa).
    os.makedirs(config.training_dir, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profile-train-", dir=config.training_dir))
    try:
        item_init = None
        if m.text_init:
            from shopper_profiles.model.network import title_embeddings

            init = title_embeddings(list(vocabulary.titles), m.hidden_size, seed=m.seed)
            item_init = str(work / "item_init.npy")
            np.save(item_init, init)
        item_category = str(work / "item_category.npy")
        np.save(item_category, vocabulary.item_category.astype(np.int32))
        item_popularity = str(work / "item_popularity.npy")
        np.save(item_popularity, history_popularity(snapshot, as_of, n_items))
        from shopper_profiles.model.network import PURCHASE_TYPE

        # General followers and, for the profile model's purchase followers, those after a purchase.
        tables = follower_tables(snapshot, as_of, n_items, spec.neighbours,
                                 after_types=(None, PURCHASE_TYPE) if spec.purchase_followers else (None,))
        for name, (follow, strength) in zip(("neighbour", "purchase")[:len(tables)], tables, strict=True):
            np.save(work / f"{name}_items.npy", follow)
            np.save(work / f"{name}_weights.npy", strength)
        total_epochs = epochs or m.epochs
        per_step = m.batch_size * num_proc
        weights_path = str(work / "weights.h5")
        params: dict[str, Any] = {
            "files": files, "seed": m.seed, "learning_rate": m.learning_rate, "batch_size": m.batch_size,
            "epochs": total_epochs, "steps_per_epoch": max(1, math.ceil(counts["train"] / per_step)),
            "threads_per_rank": max(1, (os.cpu_count() or 2) // num_proc),
            "weights_path": weights_path, "model_spec": spec.to_dict(), "item_init": item_init,
            "item_category": item_category, "item_popularity": item_popularity, "patience": m.patience,
            "neighbour_items": str(work / "neighbour_items.npy") if spec.neighbours else None,
            "neighbour_weights": str(work / "neighbour_weights.npy"), "train_rows": counts["train"],
            "purchase_items": str(work / "purchase_items.npy") if spec.purchase_followers else None,
            "purchase_weights": str(work / "purchase_weights.npy"),
        }
        dp = config.privacy.dp_sgd
        if dp.enabled:
            params["privacy"] = {"l2_norm_clip": dp.l2_norm_clip, "noise_multiplier": dp.noise_multiplier, "delta": dp.delta}
        params["checkpoint_dir"] = checkpoint_dir(config, as_of, params, store.version(spec_table), vocabulary.fingerprint)
        ranks = run_horovodrun(params, num_proc) if launcher == "horovodrun" else run_horovod_spark(params, num_proc)
        rank0 = next(r for r in ranks if r["rank"] == 0)
        validation = load_shard(files, split="validation")
        refit, spec = _refit_heads(weights_path, spec, files, validation, counts["train"], config.profiles.price_bands,
                                   refit=m.refit_heads, private=dp.enabled)
        figures = work / "figures"
        figures.mkdir()
        metrics = validation_metrics(weights_path, spec, validation, figures)
        if "val_interest_calibration" in metrics:
            spec = dataclasses.replace(spec, demand_scale=metrics["val_interest_calibration"])

        use_experiment(config.mlflow_tracking_uri, config.mlflow.experiment)
        lineage = {f"delta_version.{s.name}": store.version(s) for s in (spec_table, VOCAB)}
        with mlflow.start_run(run_name=f"profile-model-{as_of}") as run:
            mlflow.log_params({**m.model_dump(), "epochs": total_epochs, "num_proc": num_proc, "launcher": launcher,
                               "as_of": str(as_of), "n_items": n_items, "train_rows": counts["train"],
                               **{f"split.{k}": v for k, v in counts.items()}})
            mlflow.set_tags({"git_commit": git_commit(), TRAINING_SNAPSHOT_TAG: str(as_of),
                             VOCAB_FINGERPRINT_TAG: vocabulary.fingerprint, **{k: str(v) for k, v in lineage.items()}})
            for entry in rank0["history"]:
                mlflow.log_metric("train_loss", entry["loss"], step=entry["epoch"])
                if "validation_loss" in entry:
                    mlflow.log_metric("validation_loss", entry["validation_loss"], step=entry["epoch"])
            if rank0.get("dp"):  # the privacy spent travels with the model
                mlflow.log_params({f"dp.{k}": v for k, v in rank0["dp"].items() if k != "epsilon"})
                mlflow.log_metric("dp_epsilon", rank0["dp"]["epsilon"])
                mlflow.set_tag("dp_sgd", "true")
            if rank0.get("best_epoch") is not None:
                mlflow.set_tag("best_epoch", str(rank0["best_epoch"]))  # the registered weights are this epoch's
            mlflow.set_tag("refit_heads", ",".join(h for h, r in refit.items() if r.get("kept")) or "none")
            for head, found in refit.items():
                if "validation_loss_refit" in found:
                    mlflow.log_metrics({f"refit.{head}.validation_loss_trained": found["validation_loss_trained"],
                                        f"refit.{head}.validation_loss_refit": found["validation_loss_refit"]})
                if "validation_recall_at_20_refit" in found:  # the next items' repeat weight (model/heads.py)
                    mlflow.log_metrics({f"refit.{head}.{k}": found[k] for k in (
                        "shift", "validation_recall_at_20_trained", "validation_recall_at_20_refit")})
            mlflow.log_metrics({**{mlflow_name(k): v for k, v in metrics.items()}, "sequences_per_second": rank0["sequences_per_second"],
                                "input_wait_share": rank0["input_wait_seconds"] / max(rank0["seconds"], 1e-9)})
            figure, axis = plt.subplots(figsize=(5, 3))
            axis.plot([h["epoch"] for h in rank0["history"]], [h["loss"] for h in rank0["history"]], marker="o")
            axis.set_xlabel("epoch")
            axis.set_ylabel("multitask loss (mean over ranks)")
            figure.tight_layout()
            curve = work / "training_curve.png"
            figure.savefig(curve)
            plt.close(figure)
            mlflow.log_artifact(str(curve))
            mlflow.log_artifacts(str(figures), artifact_path="validation")
            (work / "spec.json").write_text(json.dumps(spec.to_dict()))
            (work / "vocab.json").write_text(vocabulary.to_json())
            mlflow.log_artifact(str(work / "spec.json"))
            mlflow.log_artifact(str(work / "vocab.json"))  # the vocabulary travels with the model
            sample = validation or load_shard(files)
            # The widest types in the signature (long, double): callers' int32/float32 convert safely.
            sample_df = pd.DataFrame({k: [np.asarray(v, dtype=np.int64) for v in sample[k][:2]]
                                      for k in ("item_seq", "type_seq", "time_seq")})
            sample_df["tabular"] = [np.asarray(v, dtype=np.float64) for v in sample["tabular"][:2]]
            artifacts = {"weights": weights_path, "spec": str(work / "spec.json")}
            probe = _pyfunc_class()()  # loaded only to infer the signature; a fresh instance is logged
            probe.load_context(type("Ctx", (), {"artifacts": artifacts})())
            signature = infer_signature(sample_df, probe.predict(None, sample_df))
            info = mlflow.pyfunc.log_model(name="profile_model", python_model=_pyfunc_class()(), artifacts=artifacts,
                                           signature=signature, pip_requirements=serving_requirements(),
                                           registered_model_name=config.mlflow.registered_model)
            version = str(info.registered_model_version)
            promoted = _maybe_promote(config.mlflow.registered_model, version, metrics.get("val_full_ndcg@10", 0.0))
            return {"run_id": run.info.run_id, "model_version": version, "champion": promoted, "metrics": metrics,
                    "best_epoch": rank0.get("best_epoch"), "dp": rank0.get("dp"), "refit_heads": refit,
                    "history": rank0["history"], "ranks": len(ranks), "weights_checksums": [r["weights_checksum"] for r in ranks],
                    "placement": [{k: r[k] for k in ("rank", "local_rank", "host", "tempdir", "opened")} for r in ranks],
                    "model_uri": f"models:/{config.mlflow.registered_model}/{version}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _refit_heads(weights_path: str, spec: ModelSpec, files: list[str], validation: dict[str, np.ndarray],
                 train_rows: int, band_shares: tuple[float, float], refit: bool,
                 private: bool) -> tuple[dict[str, dict[str, Any]], ModelSpec]:
    """The trained weights with their small heads refitted exactly (model/heads.py), written back to
    ``weights_path`` (what gets registered) when any refit was kept, and the spec to register: with the
    price-band cuts, the ``band_shares`` quantiles of the training shoppers' expected price ratio. The
    driver reads at most about MAX_ROWS training rows (a hash-chosen share of the shoppers). Neither
    under DP-SGD (``private``): a refit, or cuts, from the raw training rows would spend privacy the
    accountant never counted; such a model keeps the fixed legacy cuts."""
    from shopper_profiles.model.heads import MAX_ROWS, head_inputs, refit_heads
    from shopper_profiles.model.network import build_model

    if private:
        return {}, spec
    model = build_model(spec)
    model.load_weights(weights_path)
    train = load_shard(files, split="train", share=min(1.0, MAX_ROWS / max(train_rows, 1)))
    report: dict[str, dict[str, Any]] = {}
    out: dict[str, np.ndarray] = {}
    if refit:  # the expected price ratios come back from the refit's own forward pass over the rows
        report, out = refit_heads(model, train, validation, ("price",))
    elif train:
        _, out = head_inputs(model, train, ("price",))
    if any(r.get("kept") for r in report.values()):
        model.save_weights(weights_path)
    if "price" not in out:  # no training rows
        return report, spec
    cuts = np.quantile(price_ratio(out), band_shares)
    logger.info("price-sensitivity bands: expected price ratio below %.4f 'high', above %.4f 'low' (training shoppers' "
                "%g and %g quantiles)", cuts[0], cuts[1], *band_shares)
    return report, dataclasses.replace(spec, price_cuts=(float(cuts[0]), float(cuts[1])))


def _maybe_promote(name: str, version: str, score: float) -> bool:
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
        current_score = client.get_run(str(current.run_id)).data.metrics.get(mlflow_name("val_full_ndcg@10"), 0.0)
    except Exception:  # noqa: BLE001 - no champion yet
        current_score = -1.0
    if score >= current_score:
        client.set_registered_model_alias(name, CHAMPION, version)
        return True
    return False
