"""Lanczos iteration and top eigenpairs of a symmetric curvature operator.

Lanczos builds an orthonormal basis Q_m = [q_1 .. q_m] of the Krylov space
span{q_1, A q_1, ..., A^{m-1} q_1} and the tridiagonal T_m = Q_m^T A Q_m:

    A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T.

The eigenvalues of T_m (Ritz values) converge to the extreme eigenvalues of A
first.  For a Ritz pair (theta_i, y_i = Q_m s_i) the residual is exactly

    ||A y_i - theta_i y_i|| = |beta_m| |e_m^T s_i|,

which is the stopping test of ``top_eigenpairs``.  Every new vector is
re-orthogonalized twice against the whole basis (full reorthogonalization,
"twice is enough"), so no ghost eigenvalues appear.  T, the new vector and
every inner product are float64; the basis is *stored* in the operator's
dtype (float32 for a float32 model, whose HVPs only see float32 inputs
anyway), which halves the memory of the m x dim basis: 100 Lanczos vectors
of a 25M-parameter model take 10 GB in float32 instead of 20 GB.  Products
with a float32 basis are taken in float64 over column chunks, so no float64
copy of the basis is ever made.  When beta_j ~ 0 (breakdown: the Krylov space is
invariant and its Ritz values are exact eigenvalues) the iteration either
stops or, for ``top_eigenpairs``, continues from a fresh random vector
orthogonal to the basis.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator

import numpy as np

from tf_sharpness.errors import NonFiniteError
from tf_sharpness.curvature.linear_operator import flat_matvec, unflatten_numpy

WHICH = ("largest", "smallest", "both_ends")


@dataclasses.dataclass
class LanczosResult:
  """Output of ``lanczos``: T = tridiag(betas[:-1], alphas, betas[:-1]).

  ``betas[-1]`` is beta_m, the coupling to the next (unbuilt) vector;
  ``basis`` is the (m, dim) array of Lanczos vectors (in the storage dtype),
  assembled only when asked for (SLQ needs T alone).
  """
  alphas: np.ndarray
  betas: np.ndarray
  vectors: "_Basis" = dataclasses.field(repr=False)
  num_matvecs: int = 0

  @property
  def basis(self) -> np.ndarray:
    return self.vectors.rows(len(self.alphas))

  def tridiagonal(self) -> np.ndarray:
    return _tridiagonal(self.alphas, self.betas[:-1])


@dataclasses.dataclass
class EigenResult:
  """Eigenpairs of a curvature operator.

  ``eigenvectors[i]`` is a list of numpy arrays shaped like the operator's
  parts (a variable-shaped list), unit norm over all parts together, in the
  Lanczos basis' dtype (float32 for a float32 model).
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
                     for v in self.eigenvectors]).astype(np.float64, copy=False)


@dataclasses.dataclass
class Progress:
  """Where a running spectral method stands (passed to ``progress``)."""
  method: str  # e.g. "top-5 eigenpairs", "SLQ run 2/5"
  num_matvecs: int
  seconds: float
  worst_residual: float | None = None  # slowest wanted pair, relative
  tolerance: float | None = None
  done: bool = False


ProgressFn = Callable[[Progress], None]


def lanczos(operator, num_iters: int, *, seed: int = 0,
            start: np.ndarray | None = None,
            basis_dtype=None,
            progress: ProgressFn | None = None,
            label: str = "Lanczos") -> LanczosResult:
  """Runs ``num_iters`` Lanczos steps (fewer on breakdown).

  Args:
    operator: a curvature operator (see ``linear_operator``).
    num_iters: number of Lanczos vectors m (capped at ``operator.dim``).
    seed: seed of the Gaussian start vector.
    start: an optional flat start vector (normalized here).
    basis_dtype: storage dtype of the basis (default: the operator's).
    progress: called after every step with a ``Progress`` named ``label``.
  """
  _check_positive_int("num_iters", num_iters)
  it = _LanczosIteration(operator, min(num_iters, operator.dim), seed, start,
                         restart_on_breakdown=False, basis_dtype=basis_dtype)
  started = time.perf_counter()
  for m in it:
    if progress is not None:
      progress(Progress(label, it.num_matvecs, time.perf_counter() - started,
                        done=m == it.max_iters))
  return it.result()


def top_eigenpairs(operator, k: int = 5, *, which: str = "largest",
                   num_iters: int | None = None, tol: float = 1e-3,
                   seed: int = 0,
                   start: np.ndarray | None = None,
                   basis_dtype=None,
                   progress: ProgressFn | None = None) -> EigenResult:
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
    basis_dtype: storage dtype of the Lanczos basis (default: the
      operator's dtype; see the module doc).
    progress: called after every Lanczos step with a ``Progress`` (HVPs so
      far, the relative residual of the slowest wanted pair, seconds).
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
  if num_iters < k and num_iters < dim:
    raise ValueError(f"num_iters={num_iters} Lanczos steps cannot give k={k} "
                     "eigenpairs; use num_iters >= k")
  num_iters = min(num_iters, dim)
  it = _LanczosIteration(operator, num_iters, seed, start,
                         restart_on_breakdown=True, basis_dtype=basis_dtype)
  converged = False
  theta = s = idx = None
  started = time.perf_counter()
  label = f"top-{k} eigenpairs" if which == "largest" else f"{which} {k} eigenpairs"
  for m in it:
    if m < k and m < num_iters:
      continue
    theta, s = np.linalg.eigh(_tridiagonal(it.alphas[:m], it.betas[:m - 1]))
    idx = _select(theta, k, which)
    res = np.abs(it.betas[m - 1] * s[-1, idx])
    scale = max(np.max(np.abs(theta)), np.finfo(float).tiny)
    converged = m == dim or bool(np.all(res <= tol * scale))
    if progress is not None:
      progress(Progress(label, it.num_matvecs, time.perf_counter() - started,
                        float(np.max(res) / scale), tol, converged))
    if converged:
      break
  m = it.size
  if theta is None or s.shape[0] != m:
    theta, s = np.linalg.eigh(_tridiagonal(it.alphas[:m], it.betas[:m - 1]))
    idx = _select(theta, k, which)
  if not np.all(np.isfinite(theta)):
    raise NonFiniteError("eigenvalue")
  residuals = np.abs(it.betas[m - 1] * s[-1, idx]) if m < dim else np.zeros(len(idx))
  ritz = it.basis.combine(s[:, idx].T)  # (k, dim) in the basis' dtype
  for row in ritz:  # one float64 temporary row at a time
    row /= np.linalg.norm(row.astype(np.float64))
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


class _Basis:
  """Lanczos vectors stored in ``dtype`` in blocks of ``BLOCK`` rows.

  Blocks are allocated as the basis grows and never copied, so memory is the
  vectors themselves (a basis that doubled in place would, while copying,
  hold twice its size).  Inner products and combinations are float64; for a
  float32 basis they run over column chunks of about ``CHUNK_BYTES`` of
  float64, so no float64 copy of the basis is ever made.
  """

  BLOCK = 8
  CHUNK_BYTES = 1 << 26  # 64 MiB of float64 temporaries

  def __init__(self, dim: int, max_rows: int, dtype):
    self.dim = dim
    self.max_rows = max_rows
    self.dtype = np.dtype(dtype)
    self.blocks: list[np.ndarray] = []
    self.size = 0

  def append(self, q: np.ndarray) -> None:
    j = self.size % self.BLOCK
    if j == 0:
      rows = min(self.BLOCK, self.max_rows - self.size)
      self.blocks.append(np.empty((rows, self.dim), dtype=self.dtype))
    self.blocks[-1][j] = q
    self.size += 1

  def __getitem__(self, i: int) -> np.ndarray:
    return self.blocks[i // self.BLOCK][i % self.BLOCK].astype(np.float64, copy=False)

  def __len__(self) -> int:
    return self.size

  def _filled(self):
    """(first row, rows) of every block, trimmed to the stored rows."""
    for b, block in enumerate(self.blocks):
      yield b * self.BLOCK, block[:max(0, min(self.BLOCK, self.size - b * self.BLOCK))]

  def project_out(self, w: np.ndarray) -> np.ndarray:
    """w - Q^T (Q w) for the stored rows Q (w float64, updated in place)."""
    coeffs = np.zeros(self.size)
    for first, q in self._filled():
      for lo, hi in self._chunks(len(q)):
        coeffs[first:first + len(q)] += _f64(q[:, lo:hi]) @ w[lo:hi]
    for first, q in self._filled():
      for lo, hi in self._chunks(len(q)):
        w[lo:hi] -= coeffs[first:first + len(q)] @ _f64(q[:, lo:hi])
    return w

  def combine(self, coeffs: np.ndarray) -> np.ndarray:
    """coeffs @ Q for coeffs of shape (k, rows), in the storage dtype
    (summed in float64 over each column chunk)."""
    rows = coeffs.shape[1]
    out = np.empty((coeffs.shape[0], self.dim), dtype=self.dtype)
    for lo, hi in self._chunks(rows):
      acc = np.zeros((coeffs.shape[0], hi - lo))
      for first, q in self._filled():
        if first < rows:
          q = q[:rows - first]
          acc += coeffs[:, first:first + len(q)] @ _f64(q[:, lo:hi])
      out[:, lo:hi] = acc
    return out

  def rows(self, m: int) -> np.ndarray:
    """The first m vectors as one (m, dim) array (a copy)."""
    return np.concatenate([q for _, q in self._filled()])[:m]

  def _chunks(self, rows: int):
    if self.dtype == np.float64:
      yield 0, self.dim
      return
    width = max(1, self.CHUNK_BYTES // (8 * max(rows, 1)))
    for lo in range(0, self.dim, width):
      yield lo, min(lo + width, self.dim)


def _f64(a: np.ndarray) -> np.ndarray:
  return a.astype(np.float64, copy=False)


def _storage_dtype(operator, basis_dtype):
  if basis_dtype is not None:
    dtype = np.dtype(basis_dtype)
    if dtype not in (np.float32, np.float64):
      raise ValueError(f"basis_dtype must be float32 or float64, got {dtype}")
    return dtype
  op_dtype = getattr(operator, "dtype", None)
  name = getattr(op_dtype, "name", str(op_dtype))
  return np.dtype(np.float32) if name in ("float32", "bfloat16", "float16") \
      else np.dtype(np.float64)


class _LanczosIteration:
  """Iterator over Lanczos steps; yields the current basis size m."""

  def __init__(self, operator, max_iters: int, seed: int,
               start: np.ndarray | None, restart_on_breakdown: bool,
               basis_dtype=None):
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
    self.basis = _Basis(self.dim, max_iters,
                        _storage_dtype(operator, basis_dtype))
    self.alphas = np.zeros(max_iters)
    self.betas = np.zeros(max_iters)
    self.size = 0
    self.num_matvecs = 0
    self.scale = 0.0

  def __iter__(self) -> Iterator[int]:
    prev_beta = 0.0
    for j in range(self.max_iters):
      self.basis.append(self.q)
      q = self.basis[j]  # as stored, so the basis stays self-consistent
      w = self.apply(q)
      self.num_matvecs += 1
      if not np.all(np.isfinite(w)):
        raise NonFiniteError("Hessian-vector product",
                             f"at Lanczos step {j + 1}")
      alpha = float(q @ w)
      w -= alpha * q
      if j > 0:
        w -= prev_beta * self.basis[j - 1]
      for _ in range(2):
        self.basis.project_out(w)
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
        w = self._fresh_orthogonal()
        if w is None:
          yield self.size
          return
        beta = 0.0
        self.q = w
      else:
        self.q = w / beta
      prev_beta = beta
      yield self.size

  def _fresh_orthogonal(self):
    for _ in range(3):
      w = self.rng.standard_normal(self.dim)
      for _ in range(2):
        self.basis.project_out(w)
      norm = np.linalg.norm(w)
      if norm > 1e-8:
        return w / norm
    return None

  def result(self) -> LanczosResult:
    m = self.size
    return LanczosResult(alphas=self.alphas[:m].copy(),
                         betas=self.betas[:m].copy(),
                         vectors=self.basis,
                         num_matvecs=self.num_matvecs)
