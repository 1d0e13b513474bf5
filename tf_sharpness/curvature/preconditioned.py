"""Preconditioned curvature P^{-1/2} A P^{-1/2} for adaptive optimizers.

Adam and RMSprop step theta <- theta - eta P^{-1} m with a diagonal
preconditioner P; their stability is governed by the top eigenvalue of
P^{-1} H, which equals that of the symmetric P^{-1/2} H P^{-1/2} (Cohen et
al. 2022: Adam with momentum beta_1 sits at the "adaptive edge of
stability" (2 + 2 beta_1) / ((1 - beta_1) eta)).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


class PreconditionedOperator:
  """v -> P^{-1/2} A P^{-1/2} v for a positive diagonal P (variable-shaped)."""

  def __init__(self, operator, diagonal: Sequence):
    self.operator = operator
    self.shapes, self.dim, self.dtype = operator.shapes, operator.dim, operator.dtype
    if len(diagonal) != len(self.shapes):
      raise ValueError(f"diagonal has {len(diagonal)} parts, the operator "
                       f"{len(self.shapes)}")
    self.inv_sqrt = []
    for i, (d, s) in enumerate(zip(diagonal, self.shapes)):
      d = np.asarray(d, np.float64)
      if d.shape != tuple(s):
        raise ValueError(f"diagonal part {i} has shape {d.shape}, expected {s}")
      if not np.all(d > 0):
        raise ValueError("the preconditioner diagonal must be positive")
      self.inv_sqrt.append(tf.constant(1.0 / np.sqrt(d), dtype=self.dtype))

  @property
  def num_matvecs(self):
    return self.operator.num_matvecs

  def matvec(self, v):
    w = [tf.convert_to_tensor(t, self.dtype) * s for t, s in zip(v, self.inv_sqrt)]
    return [t * s for t, s in zip(self.operator.matvec(w), self.inv_sqrt)]


def adam_preconditioner(optimizer, variables) -> list[np.ndarray]:
  """P of a built Keras Adam (or RMSprop) optimizer for ``variables``.

  Adam: P = (1 - beta_1^t) (sqrt(v_t / (1 - beta_2^t)) + epsilon), as in
  Cohen et al. (2022); RMSprop: P = sqrt(v_t) + epsilon.
  """
  velocities = getattr(optimizer, "_velocities", None)
  if velocities is None:
    raise ValueError(f"{type(optimizer).__name__} keeps no second-moment "
                     "estimate; use Adam or RMSprop")
  t = max(int(optimizer.iterations.numpy()), 1)
  eps = float(optimizer.epsilon)
  out = []
  for var in variables:
    v = np.asarray(velocities[optimizer._get_variable_index(var)], np.float64)
    if hasattr(optimizer, "beta_2"):
      b1, b2 = float(optimizer.beta_1), float(optimizer.beta_2)
      out.append((1 - b1**t) * (np.sqrt(v / (1 - b2**t)) + eps))
    else:
      out.append(np.sqrt(v) + eps)
  return out
