"""Nudged SGD (Jastrzebski et al., 2019) as a Keras 3 optimizer.

With V = [e_1 .. e_K] the top-K Hessian eigenvectors (orthonormal columns over
the flattened parameters) and P = V V^T, one step is

    v      = momentum * v_prev - lr * g            (velocity; v = -lr g if
                                                    momentum = 0)
    s      = v                 (or momentum * v - lr * g with nesterov)
    update = gamma * P s + complement * (I - P) s
    theta <- theta + update.

The momentum buffer stores the uncorrected v.  With the default
complement = 1 this is the paper's NSGD, theta <- theta + s + (gamma - 1) P s:
the learning rate along the top-K directions becomes gamma * lr.  gamma = 0
removes the top directions from the step; gamma = 1, complement = 0 follows
only the projection.  Before ``set_directions`` is called V = 0, and NSGD is
exactly SGD.

P s needs the K dot products <s, e_k> summed over *all* variables before
any variable moves, so ``_backend_update_step`` computes them once per step
(all-reduced across replicas under ``tf.distribute``, where every replica
holds only its own gradient) and stores them in an optimizer variable that
``update_step`` reads for every variable.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="tf_sharpness")
class NSGD(keras.optimizers.Optimizer):
  """Nudged SGD: learning rate gamma * lr along the top-K eigenvectors.

  Args:
    learning_rate: float, schedule or callable, as for Keras' SGD.
    gamma: scale of the step along the top-K directions (>= 0).
    top_k: number K of directions.
    complement: scale of the step in the orthogonal complement (>= 0).
    momentum: heavy-ball momentum in [0, 1].
    nesterov: Nesterov momentum, as in ``keras.optimizers.SGD``.
    **kwargs: the base optimizer's arguments (weight_decay, clipnorm,
      global_clipnorm, name, ...).
  """

  def __init__(self, learning_rate=0.01, gamma: float = 1.0, top_k: int = 5,
               complement: float = 1.0, momentum: float = 0.0,
               nesterov: bool = False, name: str = "nsgd", **kwargs):
    if _is_real(learning_rate):
      learning_rate = float(learning_rate)  # Keras refuses numpy scalars
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    # Python or numpy scalars (np.float32 gamma, np.int64 top_k, ...);
    # booleans are not numbers here, and NaN/inf fail the range checks.
    if not _is_real(gamma) or not 0 <= gamma < np.inf:
      raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    if not _is_real(complement) or not 0 <= complement < np.inf:
      raise ValueError(
          f"complement must be a finite number >= 0, got {complement!r}")
    if not _is_integer(top_k) or top_k < 1:
      raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if not _is_real(momentum) or not 0 <= momentum <= 1:
      raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
    self.gamma = float(gamma)
    self.top_k = int(top_k)
    self.complement = float(complement)
    self.momentum = float(momentum)
    self.nesterov = bool(nesterov)

  def build(self, variables):
    if self.built:
      return
    num_params = sum(int(np.prod(v.shape)) for v in variables)
    if self.top_k > num_params:
      raise ValueError(
          f"NSGD: top_k={self.top_k} exceeds the {num_params} trainable "
          f"parameters; top_k must be in [1, {num_params}]")
    super().build(variables)
    self.momentums = []
    if self.momentum != 0:
      self.momentums = self.add_optimizer_variables(variables, "momentum")
    self.directions = [
        self.add_optimizer_variables(variables, f"direction{k}")
        for k in range(self.top_k)
    ]
    self.step_coefficients = self.add_variable(
        shape=(self.top_k,), name="step_coefficients",
        dtype=variables[0].dtype, aggregation="only_first_replica")

  # ------------------------------------------------------------- directions

  def set_directions(self, eigenvectors: Sequence[Sequence]) -> None:
    """Sets the top-K directions from a list of variable-shaped lists.

    The first ``top_k`` vectors are taken and orthonormalized (over all
    variables together) before they are stored.
    """
    if not self.built:
      raise ValueError("NSGD.set_directions: build the optimizer first "
                       "(optimizer.build(model.trainable_variables)) or run "
                       "one training step")
    eigenvectors = list(eigenvectors)
    if len(eigenvectors) < self.top_k:
      raise ValueError(f"NSGD.set_directions: got {len(eigenvectors)} "
                       f"directions, top_k={self.top_k} needed")
    shapes = [tuple(v.shape) for v in self._trainable_variables]
    flat = []
    for k, vec in enumerate(eigenvectors[:self.top_k]):
      vec = list(vec)
      if [tuple(np.shape(p)) for p in vec] != shapes:
        raise ValueError(
            f"NSGD.set_directions: direction {k} has part shapes "
            f"{[tuple(np.shape(p)) for p in vec]}, the variables have {shapes}")
      flat.append(np.concatenate(
          [np.asarray(p, dtype=np.float64).reshape(-1) for p in vec]))
      if not np.all(np.isfinite(flat[-1])):
        raise ValueError(
            f"NSGD.set_directions: direction {k} has "
            f"{np.count_nonzero(~np.isfinite(flat[-1]))} NaN or infinite "
            "entries; directions must be finite")
    q, r = np.linalg.qr(np.stack(flat, axis=1))
    if np.min(np.abs(np.diag(r))) < 1e-10 * max(np.max(np.abs(np.diag(r))), 1e-300):
      raise ValueError("NSGD.set_directions: the directions are linearly "
                       "dependent (or zero)")
    q *= np.sign(np.diag(r))[None, :]  # keep each direction's sign
    for k in range(self.top_k):
      offset = 0
      for slot, shape in zip(self.directions[k], shapes):
        n = int(np.prod(shape))
        slot.assign(q[offset:offset + n, k].reshape(shape).astype(slot.dtype))
        offset += n

  def get_directions(self) -> list[list[np.ndarray]]:
    """The stored (orthonormal) directions as variable-shaped numpy lists."""
    return [[np.asarray(s) for s in slots] for slots in self.directions]

  # -------------------------------------------------------------- the step

  def _backend_update_step(self, grads, trainable_variables, learning_rate):
    dots_g, dots_m = [], []
    for k in range(self.top_k):
      d_k = [self.directions[k][self._get_variable_index(v)]
             for v in trainable_variables]
      dots_g.append(_dot(grads, d_k))
      if self.momentums:
        m = [self.momentums[self._get_variable_index(v)]
             for v in trainable_variables]
        dots_m.append(_dot(m, d_k))
    dots_g = _sum_over_replicas(ops.stack(dots_g))
    lr = ops.cast(learning_rate, dots_g.dtype)
    if self.momentums:
      mu = ops.cast(self.momentum, dots_g.dtype)
      vel = mu * ops.stack(dots_m) - lr * dots_g  # <v, e_k>
      coeff = mu * vel - lr * dots_g if self.nesterov else vel
    else:
      coeff = -lr * dots_g
    self.step_coefficients.assign(ops.cast(coeff, self.step_coefficients.dtype))
    super()._backend_update_step(grads, trainable_variables, learning_rate)

  def update_step(self, gradient, variable, learning_rate):
    lr = ops.cast(learning_rate, variable.dtype)
    gradient = ops.cast(gradient, variable.dtype)
    index = self._get_variable_index(variable)
    step = ops.multiply(gradient, -lr)
    if self.momentums:
      m = self.momentums[index]
      mu = ops.cast(self.momentum, variable.dtype)
      velocity = ops.add(ops.multiply(m, mu), step)
      self.assign(m, velocity)
      step = ops.add(ops.multiply(velocity, mu), step) if self.nesterov else velocity
    coeff = ops.cast(self.step_coefficients, variable.dtype)
    projected = ops.zeros_like(step)
    for k in range(self.top_k):
      projected = ops.add(projected,
                          ops.multiply(coeff[k], self.directions[k][index]))
    update = ops.add(ops.multiply(step, self.complement),
                     ops.multiply(projected, self.gamma - self.complement))
    self.assign_add(variable, update)

  def get_config(self):
    config = super().get_config()
    config.update({
        "gamma": self.gamma,
        "top_k": self.top_k,
        "complement": self.complement,
        "momentum": self.momentum,
        "nesterov": self.nesterov,
    })
    return config


def _is_real(value) -> bool:
  """A Python or numpy real scalar, not a bool."""
  return (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, (bool, np.bool_)))


def _is_integer(value) -> bool:
  """A Python or numpy integer, not a bool."""
  return (isinstance(value, (int, np.integer))
          and not isinstance(value, (bool, np.bool_)))


def _dot(xs, ys):
  total = None
  for x, y in zip(xs, ys):
    if x is None:
      continue
    term = ops.sum(ops.multiply(ops.cast(x, y.dtype), y))
    total = term if total is None else total + term
  return total


def _sum_over_replicas(value):
  """All-reduces ``value`` when called in a multi-replica tf.distribute context.

  Keras sums the per-replica gradients across replicas before the update;
  dot products of per-replica gradients must be summed the same way.
  """
  if keras.backend.backend() != "tensorflow":
    return value
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return value
  return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)
