"""The operator protocol shared by the spectral methods.

A *curvature operator* is any object with

* ``matvec(v) -> list[Tensor]``: applies a symmetric matrix A to a vector
  given as a list of tensors shaped like ``shapes``;
* ``shapes``: the list of part shapes; ``dim``: their total size;
* ``dtype``: the dtype the parts are fed in.

``HessianOperator`` is one; ``MatrixOperator`` wraps an explicit symmetric
matrix (for analytic tests and quadratics).  The spectral methods work on flat
float64 vectors through ``flat_matvec``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tf_sharpness.curvature import vectors


class MatrixOperator:
  """A symmetric matrix ``A`` as a curvature operator.

  ``shapes`` splits the flat vector into parts (one part of length n by
  default), so tests can mimic a model with several variables.
  """

  def __init__(self, matrix, shapes: Sequence[Sequence[int]] | None = None,
               dtype=tf.float64):
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
      raise ValueError(f"matrix must be square, got shape {a.shape}")
    self.matrix = a
    self.shapes = [tuple(s) for s in shapes] if shapes else [(a.shape[0],)]
    self.dim = int(sum(np.prod(s) for s in self.shapes))
    if self.dim != a.shape[0]:
      raise ValueError(f"shapes hold {self.dim} entries, matrix is {a.shape}")
    self.dtype = tf.as_dtype(dtype)
    self.num_matvecs = 0

  def matvec(self, v):
    self.num_matvecs += 1
    flat = vectors.to_numpy(v)
    return vectors.from_numpy(self.matrix @ flat, self.shapes, self.dtype)


def flat_matvec(operator) -> Callable[[np.ndarray], np.ndarray]:
  """Returns ``f(x) = A x`` on flat float64 numpy vectors."""
  shapes, dtype = operator.shapes, operator.dtype

  def f(x: np.ndarray) -> np.ndarray:
    return vectors.to_numpy(
        operator.matvec(vectors.from_numpy(x, shapes, dtype)))

  return f


def unflatten_numpy(operator, x: np.ndarray) -> list[np.ndarray]:
  """Splits a flat vector into numpy arrays shaped like the operator's parts."""
  return vectors.split_numpy(x, operator.shapes)
