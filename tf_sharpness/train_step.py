"""One optimizer update on a minibatch, compiled with ``tf.function``.

For a global batch B of examples (x_n, y_n),

    loss = (1/|B|) sum_n l(y_n, f(x_n; theta)) + R(theta),
    theta <- optimizer.apply(grad loss)

with ``training=True`` in the model call (BatchNorm batch statistics and
moving averages, dropout on).  Under a multi-replica ``tf.distribute``
strategy every replica sums the losses of its shard and divides by the
*global* |B|, so the all-reduced gradient is the gradient of the global
mean; R is split evenly over replicas.

Three compiled variants, traced once each on first use:

* the default returns only the loss (no host transfer, no extra work);
* ``norms=True`` also returns ||grad||, the step length ||theta' - theta||
  and the distance from ``theta0``, ||theta' - theta0||;
* ``gradients=True`` also returns the (all-reduced) gradient.

A non-finite loss never stops the graph; ``first_nonfinite_step`` holds the
optimizer iteration at which the first one occurred (-1: none), so a driver
can check for divergence whenever it reads anything back.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from tf_sharpness import data as data_lib
from tf_sharpness import sam as sam_lib

PerExampleLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass
class StepOutputs:
  loss: tf.Tensor
  grad_norm: tf.Tensor | None = None
  step_norm: tf.Tensor | None = None
  distance: tf.Tensor | None = None
  gradients: list | None = None


class TrainStep:
  """``step(x, y)`` applies one update of ``optimizer`` to ``model``.

  Args:
    model: a built Keras model.
    optimizer: a Keras optimizer (built here for the model's variables).
    per_example_loss: ``loss(y, logits)`` of shape [batch].
    strategy: the ``tf.distribute`` strategy the model lives in.
    augment: apply ``data.augment`` with the per-step seed.
    theta0: variable-shaped reference point for ``distance`` (e.g. the
      initialization); required for ``norms=True``.
    sam_rho, sam_adaptive: > 0 for SAM (ASAM if adaptive): the update uses
      the gradient at w + e (``sam.gradient_at_perturbed``). The returned
      loss is the one at w; the returned gradient (and its norm) is the one
      the update applied, at w + e.
  """

  def __init__(self, model, optimizer, per_example_loss: PerExampleLoss, *,
               strategy: tf.distribute.Strategy | None = None, augment: bool = False,
               theta0=None, sam_rho: float = 0.0, sam_adaptive: bool = False):
    self.model = model
    self.optimizer = optimizer
    self.per_example_loss = per_example_loss
    self.strategy = strategy or tf.distribute.get_strategy()
    self.augment = augment
    self.theta0 = theta0
    self.sam_rho = sam_lib.check_rho(sam_rho, "sam_rho") if sam_rho else 0.0
    self.sam_adaptive = bool(sam_adaptive)
    self.variables = model.trainable_variables
    with self.strategy.scope():
      optimizer.build(self.variables)
    self.first_nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                            name="first_nonfinite_step")
    self._compiled = {}

  def __call__(self, x, y, *, seed=(0, 0), norms: bool = False,
               gradients: bool = False) -> StepOutputs:
    if norms and self.theta0 is None:
      raise ValueError("norms=True needs theta0")
    key = (bool(norms), bool(gradients))
    if key not in self._compiled:
      self._compiled[key] = tf.function(
          lambda *a: self._step(*a, norms=key[0], gradients=key[1]))
    global_n = tf.constant(float(len(y)))
    x, y = self.distribute(x, y)
    out = self._compiled[key](x, y, tf.constant(seed, tf.int64), global_n)
    return StepOutputs(*out) if isinstance(out, tuple) else StepOutputs(out)

  def distance_from_init(self) -> float:
    """||theta - theta0|| at the current parameters."""
    return float(tf.linalg.global_norm([v.value - t for v, t in zip(self.variables,
                                                                    self.theta0)]))

  def nonfinite_step(self) -> int | None:
    """The optimizer iteration of the first non-finite loss, if any."""
    step = int(self.first_nonfinite_step.numpy())
    return None if step < 0 else step

  def distribute(self, x, y):
    """Numpy batches as tensors, split over the replicas in order."""
    if self.strategy.num_replicas_in_sync == 1:
      return tf.constant(x), tf.constant(y)

    def shard(arr):
      return self.strategy.experimental_distribute_values_from_function(
          lambda ctx: tf.constant(np.array_split(arr, ctx.num_replicas_in_sync)[
              ctx.replica_id_in_sync_group]))
    return shard(x), shard(y)

  def _replica_loss(self, x, y, global_n, params=None):
    """This replica's share of the global mean loss (+ R / replicas), at the
    variables or, statelessly, at the values ``params``."""
    if params is None:
      logits, extra = self.model(x, training=True), self.model.losses
    else:
      non_trainable = [v.value for v in self.model.non_trainable_variables]
      logits, _, extra = self.model.stateless_call(params, non_trainable, x, training=True,
                                                   return_losses=True)
    losses = self.per_example_loss(y, logits)
    loss = tf.reduce_sum(losses) / tf.cast(global_n, losses.dtype)
    if extra:
      replicas = tf.distribute.get_replica_context().num_replicas_in_sync
      loss += tf.cast(tf.add_n(extra), loss.dtype) / replicas
    return loss

  def _replica_step(self, x, y, seed, global_n):
    if self.augment:
      x = data_lib.augment(x, seed)
    with tf.GradientTape() as tape:
      loss = self._replica_loss(x, y, global_n)
    grads = tape.gradient(loss, self.variables)
    if self.sam_rho:  # SAM/ASAM: the gradient at this replica's w + e
      grads = sam_lib.gradient_at_perturbed(
          lambda params: self._replica_loss(x, y, global_n, params),
          [v.value for v in self.variables], grads, self.sam_rho, self.sam_adaptive)
    self.optimizer.apply(grads, self.variables)
    return loss, grads

  def _step(self, x, y, seed, global_n, *, norms: bool, gradients: bool):
    iteration = tf.cast(self.optimizer.iterations, tf.int64)
    old = [tf.identity(v.value) for v in self.variables] if norms else None
    loss, grads = self.strategy.run(self._replica_step, args=(x, y, seed, global_n))
    loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    self.first_nonfinite_step.assign(tf.where(
        tf.logical_and(self.first_nonfinite_step < 0,
                       tf.logical_not(tf.math.is_finite(loss))),
        iteration, self.first_nonfinite_step))
    if not (norms or gradients):
      return loss
    grads = [self.strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None)
             for g in grads]
    out = [loss, None, None, None, grads if gradients else None]
    if norms:
      out[1] = tf.linalg.global_norm(grads)
      out[2] = tf.linalg.global_norm([v.value - o for v, o in zip(self.variables, old)])
      out[3] = tf.linalg.global_norm([v.value - t for v, t in zip(self.variables,
                                                                  self.theta0)])
    return tuple(out)

