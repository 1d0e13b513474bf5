"""Tracking the top Hessian eigenvectors along a trajectory.

* ``warm_start_vector``: a Lanczos start vector from the previous
  measurement's eigenvectors.  Lanczos from v = sum_i c_i u_i + r converges
  first to the eigenvectors v has most weight on; if the top-k subspace
  rotated little since the last measurement, a start vector inside the old
  subspace makes the Krylov space capture the new one in few steps.  Equal
  weights (and a small random part, so that a direction that newly entered
  the top k is not missed) work well in practice.
* ``subspace_rotation``: principal angles between consecutive top-k
  subspaces, the overlap matrix |<e_i(t), e_j(t')>|, and the fraction of a
  gradient that lies in the top-k subspace, ||P g|| / ||g||.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_sharpness.curvature.vectors import to_numpy


def _matrix(vectors) -> np.ndarray:
  """(k, dim) from an EigenResult, a (k, dim) array or variable-shaped lists."""
  if hasattr(vectors, "flat_eigenvectors"):
    return vectors.flat_eigenvectors()
  if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
    return vectors.astype(np.float64)
  return np.stack([to_numpy(v) for v in vectors])


def warm_start_vector(previous, *, noise: float = 0.1, seed: int = 0) -> np.ndarray:
  """sum_i u_i / sqrt(k) plus ``noise`` times a random unit vector."""
  u = _matrix(previous)
  v = u.sum(axis=0) / np.sqrt(len(u))
  if noise:
    r = np.random.default_rng(seed).standard_normal(u.shape[1])
    v = v + noise * r / np.linalg.norm(r)
  return v


@dataclasses.dataclass
class Rotation:
  """How the top-k subspace moved between two measurements."""
  principal_angles: np.ndarray  # radians, ascending
  overlaps: np.ndarray  # |<e_i(prev), e_j(now)>|, (k_prev, k_now)
  gradient_overlap: float | None  # ||P g|| / ||g|| with P onto the new subspace


def subspace_rotation(previous, current, gradient=None) -> Rotation:
  a, b = _matrix(previous), _matrix(current)
  qa, _ = np.linalg.qr(a.T)
  qb, _ = np.linalg.qr(b.T)
  s = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)
  angles = np.sort(np.arccos(s))
  overlaps = np.abs(a @ b.T)
  g_overlap = None
  if gradient is not None:
    g = (gradient.astype(np.float64) if isinstance(gradient, np.ndarray)
         else to_numpy(gradient))
    norm = np.linalg.norm(g)
    g_overlap = float(np.linalg.norm(qb.T @ g) / norm) if norm > 0 else 0.0
  return Rotation(angles, overlaps, g_overlap)
