"""DP-SGD in our own GradientTape loop (``tensorflow-privacy`` does not import with TF 2.18).

Each step: every example's gradient (vectorised with ``tf.vectorized_map``, no Python loop over
the batch), clipped to L2 norm ``l2_norm_clip`` over all variables together, summed; under Horovod
the clipped sums are allreduced (sum) and the Gaussian noise N(0, (sigma * C)^2) is added **once
for the global batch** -- by rank 0 only, before the sum -- then divided by the global batch size.
Every rank applies the same noisy mean. The privacy spent is counted by ``dp-accounting``'s RDP
accountant as a Poisson-sampled Gaussian mechanism with q = global batch / training rows
composed over the steps taken (our batches are shuffled, not Poisson-sampled: the usual
approximation of DP-SGD papers, stated beside the number).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrivacySpec:
    """The DP-SGD knobs (config ``model.privacy``)."""

    l2_norm_clip: float
    noise_multiplier: float
    delta: float


def clip_and_sum(per_example: Sequence[Any], l2_norm_clip: float) -> tuple[list[Any], Any]:
    """Each example's gradient (leading axis: the example) scaled to global L2 norm <= C, then
    summed over the batch; returns (sums per variable, the examples' norms before clipping)."""
    import tensorflow as tf

    squares = [tf.reshape(tf.square(g), [tf.shape(g)[0], -1]) for g in per_example]
    norms = tf.sqrt(tf.add_n([tf.reduce_sum(s, axis=1) for s in squares]))
    factors = tf.minimum(1.0, l2_norm_clip / tf.maximum(norms, 1e-12))
    return [tf.tensordot(factors, g, axes=1) for g in per_example], norms


def per_example_gradients(loss_of_one: Callable[[Any, Any], Any], variables: Sequence[Any], features: Any,
                          labels: Any) -> tuple[Any, list[Any]]:
    """(each example's loss, d loss(example) / d variables), vectorised over the batch
    (``loss_of_one`` sees one example with a batch axis of 1). Sparse gradients (embedding
    lookups) come back dense: (batch, rows, width)."""
    import tensorflow as tf

    def one(example: Any) -> list[Any]:
        f, lab = tf.nest.map_structure(lambda t: tf.expand_dims(t, 0), example)
        with tf.GradientTape() as tape:
            loss = loss_of_one(f, lab)
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [loss, *[tf.convert_to_tensor(g) for g in grads]]

    loss, *grads = tf.vectorized_map(one, (features, labels))
    return loss, grads


def noisy_global_mean(clipped_sums: Sequence[Any], spec: PrivacySpec, local_batch: int, rank: int, size: int,
                      allreduce_sum: Callable[[Any], Any]) -> list[Any]:
    """The DP gradient every rank applies: (sum over all ranks of the clipped sums + one draw of
    N(0, (sigma C)^2) per coordinate, added by rank 0 alone) / global batch."""
    import tensorflow as tf

    # Every rank draws and scales (rank 0 by 1, the others by 0): the same graph on every rank, so
    # Horovod's collective ops keep the same names (a rank-dependent graph deadlocks the allreduce).
    own = 1.0 if rank == 0 else 0.0
    out = []
    for total in clipped_sums:
        noise = tf.random.normal(tf.shape(total), stddev=spec.noise_multiplier * spec.l2_norm_clip)
        out.append(allreduce_sum(total + own * noise) / float(local_batch * size))
    return out


def epsilon(spec: PrivacySpec, sampling_probability: float, steps: int) -> float:
    """(epsilon, delta)-DP spent after ``steps`` steps at sampling rate q (RDP accountant)."""
    import dp_accounting

    if spec.noise_multiplier <= 0:
        return float("inf")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_probability, dp_accounting.GaussianDpEvent(spec.noise_multiplier)),
        steps)
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(spec.delta))
