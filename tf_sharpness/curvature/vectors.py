"""Conversions between variable-shaped lists of tensors and flat vectors.

The spectral methods work on flat float64 numpy vectors of length
``dim = sum(prod(shape))``; operators take and return lists of tensors shaped
like the model's trainable variables.  ``flatten`` and ``unflatten`` are exact
inverses of each other for a fixed list of shapes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


def flatten(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
  """Concatenates ``tensors`` into one rank-1 tensor (row-major order)."""
  if not tensors:
    raise ValueError("flatten: got an empty list of tensors")
  return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(vector, like: Sequence) -> list[tf.Tensor]:
  """Splits a rank-1 ``vector`` into tensors shaped like the items of ``like``.

  ``like`` may hold variables, tensors or shapes.  The dtype of the result is
  the dtype of ``vector``.
  """
  shapes = [_shape_of(t) for t in like]
  sizes = [int(np.prod(s)) for s in shapes]
  vector = tf.convert_to_tensor(vector)
  if vector.shape.rank != 1 or vector.shape[0] != sum(sizes):
    raise ValueError(
        f"unflatten: vector has shape {vector.shape}, expected [{sum(sizes)}]"
        f" for {len(shapes)} tensors")
  parts = tf.split(vector, sizes) if len(sizes) > 1 else [vector]
  return [tf.reshape(p, s) for p, s in zip(parts, shapes)]


def to_numpy(tensors: Sequence) -> np.ndarray:
  """Flattens a list of tensors into a float64 numpy vector."""
  return np.concatenate(
      [np.asarray(t, dtype=np.float64).reshape(-1) for t in tensors])


def split_numpy(vector: np.ndarray, like: Sequence) -> list[np.ndarray]:
  """Splits a flat numpy vector into arrays shaped like ``like`` (views)."""
  shapes = [_shape_of(t) for t in like]
  out, offset = [], 0
  for s in shapes:
    n = int(np.prod(s))
    out.append(vector[offset:offset + n].reshape(s))
    offset += n
  if offset != vector.shape[0]:
    raise ValueError(
        f"vector has length {vector.shape[0]}, the shapes hold {offset}")
  return out


def from_numpy(vector: np.ndarray, like: Sequence, dtype=None) -> list[tf.Tensor]:
  """Splits a numpy vector into tensors shaped like ``like`` (cast to dtype)."""
  return [tf.constant(p, dtype=dtype) if dtype else tf.constant(p)
          for p in split_numpy(vector, like)]


def _shape_of(t) -> tuple[int, ...]:
  if isinstance(t, (tuple, list, tf.TensorShape)):
    return tuple(int(d) for d in t)
  return tuple(int(d) for d in t.shape)
