"""Horovod data-parallel training of the profile model (one worker function for every launcher).

    horovodrun -np 2 -H localhost:2 --gloo python -m shopper_profiles.model.train --params params.json
    horovod.spark.run(train_worker, args=(params,), num_proc=2)          # on a Spark cluster

Follows horovod's examples: imports inside the worker, ``hvd.init()``, learning rate scaled by
``hvd.size()``, variables broadcast from rank 0, reads sharded by rank, checkpoints and the
final weights written by rank 0 only. On GPUs each rank pins the GPU of its local rank.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import time
from typing import Any

PROGRESS = "PROGRESS"  # rank 0's progress lines; the launcher relays them to the user


def train_worker(params: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow as hvd
    import numpy as np
    import tensorflow as tf

    from shopper_profiles.model.inputs import load_shard, training_stream, validation_batches
    from shopper_profiles.model.network import ModelSpec, build_model, multitask_loss
    from shopper_profiles.model.privacy import PrivacySpec, clip_and_sum, epsilon, noisy_global_mean, per_example_gradients

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        # CPU ranks: Horovod's background thread wakes every HOROVOD_CYCLE_TIME ms (default 1, tuned for
        # GPU steps of a few ms) and competes with the rank's compute for its core. Measured on 2 cores,
        # 2 ranks x 1 thread: 0.2 ms 513 ms/step, 1 ms 431, 5 ms 415, 20 ms 408, 60 ms 436 (docs/BENCHMARKS.md).
        os.environ.setdefault("HOROVOD_CYCLE_TIME", "20")
    hvd.init()  # distributed: one process per rank
    if gpus:  # distributed: one GPU per rank, chosen by local rank
        tf.config.set_visible_devices(gpus[hvd.local_rank()], "GPU")
        tf.config.experimental.set_memory_growth(gpus[hvd.local_rank()], True)
    threads = int(params.get("threads_per_rank", 1))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    # Horovod's collective ops block a thread each: one inter-op thread deadlocks the allreduce.
    tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    seed = int(params["seed"])
    # distributed: each rank draws its own initial weights; only the broadcast below makes them equal
    # (so a missing broadcast shows up as ranks that disagree, not as a silent coincidence).
    tf.keras.utils.set_random_seed(seed + hvd.rank())
    tf.config.experimental.enable_op_determinism()  # same seed, same data -> the same weights, run after run
    if params.get("pin_cores"):  # benchmark: one core per rank, so ranks never share a core
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[(hvd.local_rank() * threads + i) % len(cores)] for i in range(threads)})

    shard = load_shard(params["files"], rank=hvd.rank(), size=hvd.size(), split="train")  # distributed: own shard
    rows = len(shard.get("user_id", []))
    if rows == 0:
        raise ValueError(f"rank {hvd.rank()} of {hvd.size()} got no training rows; write the training set in more "
                         "files (target_files) or run fewer ranks")
    spec = ModelSpec(**params["model_spec"])
    item_init = np.load(params["item_init"]) if params.get("item_init") else None
    item_category = np.load(params["item_category"]) if params.get("item_category") else None
    item_popularity = np.load(params["item_popularity"]) if params.get("item_popularity") else None
    neighbours = (np.load(params["neighbour_items"]), np.load(params["neighbour_weights"])) if params.get("neighbour_items") else None
    bought = ((np.load(params["purchase_items"]), np.load(params["purchase_weights"])) if params.get("purchase_items")
              else None)
    model = build_model(spec, item_init, item_category, item_popularity, neighbours, bought)
    optimizer = tf.keras.optimizers.Adam(learning_rate=float(params["learning_rate"]) * hvd.size())  # distributed: scaled lr
    step = tf.Variable(0, dtype=tf.int64, name="step")
    # Early stopping's state lives in the checkpoint, so a resumed run stops where an uninterrupted one would.
    best_loss = tf.Variable(np.inf, dtype=tf.float64, name="best_validation_loss")
    best_epoch = tf.Variable(-1, dtype=tf.int64, name="best_epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, best_loss=best_loss, best_epoch=best_epoch)
    manager = tf.train.CheckpointManager(checkpoint, params["checkpoint_dir"], max_to_keep=2)
    if manager.latest_checkpoint:  # resume after an interruption: every rank reads the same checkpoint
        checkpoint.restore(manager.latest_checkpoint)
    start_epoch = int(step.numpy()) // max(1, int(params["steps_per_epoch"]))
    if start_epoch and hvd.rank() == 0:
        print(f"{PROGRESS} resuming from {manager.latest_checkpoint} at epoch {start_epoch + 1}/{params['epochs']}", flush=True)

    # distributed: every rank starts from rank 0's weights and optimizer state. The optimizer's
    # slots are built first so they can be broadcast now, outside the step: one trace of the step
    # instead of two (a first-batch flag would trace the whole BERT graph twice, ~10 s here).
    optimizer.build(model.trainable_variables)
    hvd.broadcast_variables(model.variables, root_rank=0)
    hvd.broadcast_variables(optimizer.variables() if callable(optimizer.variables) else optimizer.variables, root_rank=0)

    @tf.function
    def train_step(features: dict[str, Any], labels: dict[str, Any]) -> Any:
        with tf.GradientTape() as tape:
            outputs = model(features, training=True)
            table, bias = (model.item_embedding, model.item_bias) if spec.causal else (None, None)  # causal: + history loss
            loss, parts = multitask_loss(outputs, labels, features["item_seq"], table, bias)
        tape = hvd.DistributedGradientTape(tape)  # distributed: allreduce gradients
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss, parts

    privacy = PrivacySpec(**params["privacy"]) if params.get("privacy") else None

    @tf.function
    def private_step(features: dict[str, Any], labels: dict[str, Any]) -> Any:
        """DP-SGD: per-example gradients clipped, noise once for the global batch (model/privacy.py)."""

        def loss_of_one(f: dict[str, Any], lab: dict[str, Any]) -> Any:
            outputs = model(f, training=True)
            table, bias = (model.item_embedding, model.item_bias) if spec.causal else (None, None)
            return multitask_loss(outputs, lab, f["item_seq"], table, bias, masked=False)[0]

        assert privacy is not None
        losses, grads = per_example_gradients(loss_of_one, model.trainable_variables, features, labels)
        sums, _norms = clip_and_sum(grads, privacy.l2_norm_clip)
        # distributed: clipped sums allreduced (sum); rank 0 alone adds the noise, so it counts once
        noisy = noisy_global_mean(sums, privacy, int(params["batch_size"]), hvd.rank(), hvd.size(),
                                  lambda t: hvd.allreduce(t, op=hvd.Sum))
        optimizer.apply_gradients(zip(noisy, model.trainable_variables, strict=True))
        return tf.reduce_mean(losses), {}

    step_function = private_step if privacy is not None else train_step
    patience = int(params.get("patience", 0))
    validation = load_shard(params["files"], split="validation") if patience and hvd.rank() == 0 else {}
    # Not "*.weights.h5": tf_keras would write its v3 layout, which the legacy loader cannot read.
    best_weights = os.path.join(params["checkpoint_dir"], "best_weights.h5")
    if hvd.rank() == 0:
        os.makedirs(params["checkpoint_dir"], exist_ok=True)

    @tf.function
    def validation_step(features: dict[str, Any], labels: dict[str, Any]) -> Any:
        # The profile's heads judge an epoch; the history's next-item loss only helps train the
        # encoder (it measures positions inside the validation users' past, and overfits first).
        return multitask_loss(model(features, training=False), labels)[0]

    def validation_loss() -> float:
        """Rank 0's head losses on the validation users (row-weighted over batches of 1,024)."""
        total, rows_seen = 0.0, 0
        for features, labels in validation_batches(validation, 1024):
            n = len(labels["next_item"])
            total += float(validation_step(features, labels)) * n
            rows_seen += n
        return total / max(rows_seen, 1)

    history: list[dict[str, float]] = []
    steps_per_epoch = int(params["steps_per_epoch"])
    started = time.perf_counter()
    input_wait = 0.0
    stream = iter(training_stream(shard, int(params["batch_size"]), seed, start_epoch, int(params["epochs"]), steps_per_epoch))
    last_epoch = int(params["epochs"])
    if patience and start_epoch and start_epoch - 1 - int(best_epoch.numpy()) >= patience:
        last_epoch = start_epoch  # the checkpointed run had already stopped early: nothing left to train
        if hvd.rank() == 0:
            print(f"{PROGRESS} stopped early before the restart; keeping epoch {int(best_epoch.numpy()) + 1}", flush=True)
    for epoch in range(start_epoch, last_epoch):
        losses: list[float] = []
        epoch_start, epoch_wait = time.perf_counter(), 0.0
        for _ in range(steps_per_epoch):
            wait_start = time.perf_counter()
            features, labels = next(stream)
            epoch_wait += time.perf_counter() - wait_start
            loss, _parts = step_function(features, labels)
            step.assign_add(1)
            losses.append(float(loss))
            if params.get("crash_at_step") == int(step.numpy()) and hvd.rank() == 0:  # fault tests: die mid-epoch
                os.kill(os.getpid(), signal.SIGKILL)
        input_wait += epoch_wait
        mean_loss = float(hvd.allreduce(tf.constant(np.mean(losses), tf.float32), op=hvd.Average))
        history.append({"epoch": epoch, "loss": mean_loss, "step": int(step.numpy()),
                        "seconds": time.perf_counter() - epoch_start, "input_wait_seconds": epoch_wait})
        stop = 0
        note = ""
        if patience and hvd.rank() == 0:  # distributed: rank 0 judges the epoch on the validation users
            val = validation_loss()
            history[-1]["validation_loss"] = val
            if not np.isfinite(val):
                raise FloatingPointError(f"validation loss is {val} after epoch {epoch + 1}: lower model.learning_rate "
                                         "or check the training set's tabular features for inf/NaN")
            if val < float(best_loss.numpy()):
                best_loss.assign(val)
                best_epoch.assign(epoch)
                model.save_weights(best_weights)
                note = f" validation {val:.4f} (best)"
            else:
                note = f" validation {val:.4f} (best {float(best_loss.numpy()):.4f} at epoch {int(best_epoch.numpy()) + 1})"
                stop = int(epoch - int(best_epoch.numpy()) >= patience)
        if hvd.rank() == 0:  # distributed: only rank 0 writes checkpoints and reports progress
            save_start = time.perf_counter()
            manager.save(checkpoint_number=int(step.numpy()))
            history[-1]["checkpoint_seconds"] = time.perf_counter() - save_start
            print(f"{PROGRESS} epoch {epoch + 1}/{params['epochs']} loss {mean_loss:.4f}{note} {history[-1]['seconds']:.1f}s",
                  flush=True)
        # distributed: rank 0's decision reaches every rank, so all leave the loop together
        if patience and int(hvd.broadcast(tf.constant(stop, tf.int32), root_rank=0, name="early_stop")):
            if hvd.rank() == 0:
                print(f"{PROGRESS} early stop: no validation improvement for {patience} epochs; keeping epoch "
                      f"{int(best_epoch.numpy()) + 1}", flush=True)
            break
    elapsed = time.perf_counter() - started
    checksum = float(sum(float(tf.reduce_sum(tf.abs(v))) for v in model.trainable_variables))
    import socket
    import tempfile

    # Where this rank ran and which files it opened: on a cluster they must all be shared paths.
    opened = [params[k] for k in ("item_init", "item_category", "item_popularity", "neighbour_items", "neighbour_weights")
              if params.get(k)] + [params["checkpoint_dir"]] + ([params["weights_path"]] if hvd.rank() == 0 and
                                                                 params.get("weights_path") else [])
    result = {"rank": hvd.rank(), "size": hvd.size(), "local_rank": hvd.local_rank(), "host": socket.gethostname(),
              "tempdir": tempfile.gettempdir(), "opened": opened,
              "rows": rows, "history": history, "weights_checksum": checksum,
              "steps": int(step.numpy()), "seconds": elapsed, "input_wait_seconds": input_wait,
              "sequences_per_second": (len(history) * steps_per_epoch * int(params["batch_size"]) / elapsed) if history else 0.0}
    if privacy is not None:  # the privacy spent by every step taken (a resumed run counts all of them)
        q = min(1.0, int(params["batch_size"]) * hvd.size() / max(int(params["train_rows"]), 1))
        result["dp"] = {"epsilon": epsilon(privacy, q, int(step.numpy())), "delta": privacy.delta, "sampling_probability": q,
                        "steps": int(step.numpy()), "noise_multiplier": privacy.noise_multiplier,
                        "l2_norm_clip": privacy.l2_norm_clip, "accountant": "RDP (dp-accounting), Poisson-sampled Gaussian"}
        if hvd.rank() == 0:
            print(f"{PROGRESS} DP-SGD: epsilon {result['dp']['epsilon']:.2f} at delta {privacy.delta:g} "
                  f"(sigma {privacy.noise_multiplier}, C {privacy.l2_norm_clip}, q {q:.4f}, {result['dp']['steps']} steps)",
                  flush=True)
    result["best_epoch"] = int(best_epoch.numpy()) if patience else None
    result["best_validation_loss"] = float(best_loss.numpy()) if patience else None
    if hvd.rank() == 0 and params.get("weights_path"):
        if patience and os.path.exists(best_weights):  # the best validation epoch is what gets registered
            shutil.copyfile(best_weights, params["weights_path"])
        else:
            model.save_weights(params["weights_path"])
    if params.get("rank_weights_dir"):  # tests: every rank's variables, to compare them one by one
        np.savez(os.path.join(params["rank_weights_dir"], f"rank{hvd.rank()}.npz"),
                 **{f"{i:03d}_{v.name}": v.numpy() for i, v in enumerate(model.trainable_variables)})
    if params.get("result_dir"):
        with open(os.path.join(params["result_dir"], f"rank{hvd.rank()}.json"), "w") as handle:
            json.dump(result, handle)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="JSON file with the worker parameters")
    args = parser.parse_args(argv)
    with open(args.params) as handle:
        params = json.load(handle)
    train_worker(params)


if __name__ == "__main__":
    main()
