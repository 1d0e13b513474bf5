"""Lanczos iteration and top eigenpairs of a symmetric curvature operator.

Lanczos builds an orthonormal basis Q_m = [q_1 .. q_m] of the Krylov space
span{q_1, A q_1, ..., A^{m-1} q_1} and the tridiagonal T_m = Q_m^T A Q_m:

    A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T.

The eigenvalues of T_m (Ritz values) converge to the extreme eigenvalues of A
first.  For a Ritz pair (theta_i, y_i = Q_m s_i) the residual is exactly

    ||A y_i - theta_i y_i|| = |beta_m| |e_m^T s_i|,

which is the stopping test of ``top_eigenpairs``.  Every new vector is
re-orthogonalized twice against the whole basis (full reorthogonalization,
"twice is enough"), and all vectors and T are kept in float64, so no ghost
eigenvalues appear.  When beta_j ~ 0 (breakdown: the Krylov space is
invariant and its Ritz values are exact eigenvalues) the iteration either
stops or, for ``top_eigenpairs``, continues from a fresh random vector
orthogonal to the basis.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from tf_sharpness.errors import NonFiniteError
from tf_sharpness.linear_operator import flat_matvec, unflatten_numpy

WHICH = ("largest", "smallest", "both_ends")


@dataclasses.dataclass
class LanczosResult:
  """Output of ``lanczos``: T = tridiag(betas[:-1], alphas, betas[:-1]).

  ``betas[-1]`` is beta_m, the coupling to the next (unbuilt) vector;
  ``basis`` is the (m, dim) float64 array of Lanczos vectors.
  """
  alphas: np.ndarray
  betas: np.ndarray
  basis: np.ndarray
  num_matvecs: int

  def tridiagonal(self) -> np.ndarray:
    return _tridiagonal(self.alphas, self.betas[:-1])


@dataclasses.dataclass
class EigenResult:
  """Eigenpairs of a curvature operator.

  ``eigenvectors[i]`` is a list of numpy arrays shaped like the operator's
  parts (a variable-shaped list), unit norm over all parts together.
  ``residual_norms[i]`` is ||A v_i - lambda_i v_i||.
  """
  eigenvalues: np.ndarray
  eigenvectors: list
  residual_norms: np.ndarray
  num_matvecs: int
  num_iters: int
  converged: bool

  def flat_eigenvectors(self) -> np.ndarray:
    """Eigenvectors as a (k, dim) float64 array."""
    return np.stack([np.concatenate([p.reshape(-1) for p in v])
                     for v in self.eigenvectors])


def lanczos(operator, num_iters: int, *, seed: int = 0,
            start: np.ndarray | None = None) -> LanczosResult:
  """Runs ``num_iters`` Lanczos steps (fewer on breakdown).

  Args:
    operator: a curvature operator (see ``linear_operator``).
    num_iters: number of Lanczos vectors m (capped at ``operator.dim``).
    seed: seed of the Gaussian start vector.
    start: an optional flat start vector (normalized here).
  """
  _check_positive_int("num_iters", num_iters)
  it = _LanczosIteration(operator, min(num_iters, operator.dim), seed, start,
                         restart_on_breakdown=False)
  for _ in it:
    pass
  return it.result()


def top_eigenpairs(operator, k: int = 5, *, which: str = "largest",
                   num_iters: int | None = None, tol: float = 1e-3,
                   seed: int = 0,
                   start: np.ndarray | None = None) -> EigenResult:
  """The k extreme eigenpairs of a symmetric operator by Lanczos.

  Stops as soon as every one of the k wanted Ritz pairs has residual
  ||A v - lambda v|| <= tol * |lambda_max| (lambda_max the Ritz value of
  largest magnitude), or after ``num_iters`` matvecs.

  Args:
    which: "largest" (algebraic, sorted descending), "smallest" (algebraic,
      ascending) or "both_ends" (ceil(k/2) largest and floor(k/2) smallest,
      sorted descending).
    num_iters: the most Lanczos steps; default min(dim, max(100, 20 k)).
    tol: relative residual tolerance.
    start: an optional flat start vector (e.g. the sum of the previous
      measurement's eigenvectors, to warm-start tracking).
  """
  _check_positive_int("k", k)
  if which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")
  if not tol > 0:
    raise ValueError(f"tol must be > 0, got {tol!r}")
  dim = operator.dim
  if k > dim:
    raise ValueError(f"k={k} exceeds the operator's dimension {dim}")
  if num_iters is None:
    num_iters = max(100, 20 * k)
  _check_positive_int("num_iters", num_iters)
  num_iters = min(num_iters, dim)
  it = _LanczosIteration(operator, num_iters, seed, start,
                         restart_on_breakdown=True)
  converged = False
  theta = s = idx = None
  for m in it:
    if m < k and m < num_iters:
      continue
    theta, s = np.linalg.eigh(_tridiagonal(it.alphas[:m], it.betas[:m - 1]))
    idx = _select(theta, k, which)
    res = np.abs(it.betas[m - 1] * s[-1, idx])
    scale = max(np.max(np.abs(theta)), np.finfo(float).tiny)
    if m == dim or np.all(res <= tol * scale):
      converged = True
      break
  m = it.size
  if theta is None or s.shape[0] != m:
    theta, s = np.linalg.eigh(_tridiagonal(it.alphas[:m], it.betas[:m - 1]))
    idx = _select(theta, k, which)
  if not np.all(np.isfinite(theta)):
    raise NonFiniteError("eigenvalue")
  residuals = np.abs(it.betas[m - 1] * s[-1, idx]) if m < dim else np.zeros(len(idx))
  ritz = s[:, idx].T @ it.basis[:m]  # (k, dim)
  ritz /= np.linalg.norm(ritz, axis=1, keepdims=True)
  return EigenResult(
      eigenvalues=theta[idx],
      eigenvectors=[unflatten_numpy(operator, r) for r in ritz],
      residual_norms=residuals,
      num_matvecs=it.num_matvecs,
      num_iters=m,
      converged=converged)


def _select(theta: np.ndarray, k: int, which: str) -> np.ndarray:
  """Indices of the wanted Ritz values in ascending ``theta``."""
  k = min(k, len(theta))
  if which == "largest":
    return np.arange(len(theta) - 1, len(theta) - 1 - k, -1)
  if which == "smallest":
    return np.arange(k)
  top = (k + 1) // 2
  bottom = k - top
  hi = list(range(len(theta) - 1, len(theta) - 1 - top, -1))
  lo = list(range(bottom - 1, -1, -1))
  return np.array(hi + lo, dtype=int)


def _tridiagonal(alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
  return np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)


def _check_positive_int(name, value):
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _LanczosIteration:
  """Iterator over Lanczos steps; yields the current basis size m."""

  def __init__(self, operator, max_iters: int, seed: int,
               start: np.ndarray | None, restart_on_breakdown: bool):
    self.apply = flat_matvec(operator)
    self.dim = operator.dim
    self.max_iters = max_iters
    self.rng = np.random.default_rng(seed)
    self.restart_on_breakdown = restart_on_breakdown
    if start is None:
      q = self.rng.standard_normal(self.dim)
    else:
      q = np.asarray(start, dtype=np.float64).reshape(-1)
      if q.shape[0] != self.dim:
        raise ValueError(f"start has length {q.shape[0]}, the operator's "
                         f"dimension is {self.dim}")
    norm = np.linalg.norm(q)
    if not norm > 0 or not np.isfinite(norm):
      raise ValueError("start vector must be finite and nonzero")
    self.q = q / norm
    self.basis = np.empty((min(max_iters, 32), self.dim))
    self.alphas = np.zeros(max_iters)
    self.betas = np.zeros(max_iters)
    self.size = 0
    self.num_matvecs = 0
    self.scale = 0.0

  def __iter__(self) -> Iterator[int]:
    prev_beta = 0.0
    for j in range(self.max_iters):
      if j >= self.basis.shape[0]:
        grown = np.empty((min(2 * self.basis.shape[0], self.max_iters), self.dim))
        grown[:j] = self.basis[:j]
        self.basis = grown
      self.basis[j] = self.q
      w = self.apply(self.q)
      self.num_matvecs += 1
      if not np.all(np.isfinite(w)):
        raise NonFiniteError("Hessian-vector product",
                             f"at Lanczos step {j + 1}")
      alpha = float(self.q @ w)
      w -= alpha * self.q
      if j > 0:
        w -= prev_beta * self.basis[j - 1]
      q_basis = self.basis[:j + 1]
      for _ in range(2):
        w -= q_basis.T @ (q_basis @ w)
      beta = float(np.linalg.norm(w))
      self.alphas[j] = alpha
      self.betas[j] = beta
      self.size = j + 1
      self.scale = max(self.scale, abs(alpha) + beta)
      breakdown = beta <= 1e-10 * max(self.scale, np.finfo(float).tiny)
      if breakdown:
        self.betas[j] = 0.0
        if not self.restart_on_breakdown or j + 1 >= self.max_iters:
          yield self.size
          return
        w = self._fresh_orthogonal(q_basis)
        if w is None:
          yield self.size
          return
        beta = 0.0
        self.q = w
      else:
        self.q = w / beta
      prev_beta = beta
      yield self.size

  def _fresh_orthogonal(self, q_basis):
    for _ in range(3):
      w = self.rng.standard_normal(self.dim)
      for _ in range(2):
        w -= q_basis.T @ (q_basis @ w)
      norm = np.linalg.norm(w)
      if norm > 1e-8:
        return w / norm
    return None

  def result(self) -> LanczosResult:
    m = self.size
    return LanczosResult(alphas=self.alphas[:m].copy(),
                         betas=self.betas[:m].copy(),
                         basis=self.basis[:m],
                         num_matvecs=self.num_matvecs)
