"""Spectral density by stochastic Lanczos quadrature (SLQ).

For a symmetric A of dimension n with eigenpairs (lambda_i, u_i), the
spectral density is phi(t) = (1/n) sum_i delta(t - lambda_i).  For a random
unit vector v, E[v^T f(A) v] = (1/n) tr f(A) = integral f dphi.  Running m
Lanczos steps from v gives T_m = S diag(theta) S^T, and the Gauss quadrature
v^T f(A) v ~= sum_j tau_j f(theta_j) with tau_j = S_{1j}^2 (sum_j tau_j = 1).
Averaging over R random starts and broadening every node with a Gaussian of
width sigma (Ghorbani, Krishnan & Xiao, 2019) gives

    phi_sigma(t) = (1/R) sum_r sum_j tau_rj N(t; theta_rj, sigma^2),

a density that integrates to 1 and whose mean is the estimate of tr(A)/n.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tf_sharpness.curvature.lanczos import Progress, ProgressFn, _check_positive_int, lanczos


@dataclasses.dataclass
class DensityResult:
  """SLQ output: the broadened density on ``grid`` and the raw quadrature.

  ``nodes`` and ``weights`` have shape (num_runs, m); each row of
  ``weights`` sums to 1.
  """
  grid: np.ndarray
  density: np.ndarray
  nodes: np.ndarray
  weights: np.ndarray
  sigma: float
  num_matvecs: int

  def moment(self, p: int = 1) -> float:
    """Quadrature estimate of (1/n) tr(A^p), without broadening."""
    return float(np.mean(np.sum(self.weights * self.nodes**p, axis=1)))


def spectral_density(operator, *, num_runs: int = 10, num_iters: int = 80,
                     grid: np.ndarray | int | None = None,
                     sigma: float | None = None,
                     seed: int = 0,
                     progress: ProgressFn | None = None) -> DensityResult:
  """Estimates the spectral density of ``operator`` by SLQ.

  Args:
    num_runs: number R of random start vectors (Rademacher, normalized).
    num_iters: Lanczos steps per run (capped at the dimension; fewer on
      breakdown, where the quadrature is then exact).
    grid: evaluation points, or their number (default 1000) on
      [min node - 6 sigma, max node + 6 sigma].
    sigma: Gaussian broadening; default 1% of the spread of the nodes.
    seed: seed of the start vectors.
    progress: called after every Lanczos step with a ``Progress``.
  """
  _check_positive_int("num_runs", num_runs)
  _check_positive_int("num_iters", num_iters)
  if sigma is not None and not sigma > 0:
    raise ValueError(f"sigma must be > 0, got {sigma!r}")
  rng = np.random.default_rng(seed)
  m = min(num_iters, operator.dim)
  nodes = np.zeros((num_runs, m))
  weights = np.zeros((num_runs, m))
  matvecs = 0
  started = time.perf_counter()
  for r in range(num_runs):
    v = rng.choice([-1.0, 1.0], size=operator.dim)
    step = None
    if progress is not None:  # every Lanczos step, counted over all runs
      step = lambda p, done=matvecs, r=r: progress(Progress(
          f"SLQ density, run {r + 1}/{num_runs}", done + p.num_matvecs,
          time.perf_counter() - started, done=p.done and r + 1 == num_runs))
    res = lanczos(operator, m, start=v, seed=seed + r, progress=step)
    theta, s = np.linalg.eigh(res.tridiagonal())
    size = len(theta)
    # After a breakdown the quadrature has fewer nodes; pad with zero weight.
    nodes[r, :size] = theta
    nodes[r, size:] = theta[-1]
    weights[r, :size] = s[0, :] ** 2
    matvecs += res.num_matvecs
  lo, hi = float(nodes.min()), float(nodes.max())
  if sigma is None:
    sigma = max(0.01 * (hi - lo), 1e-12 * max(abs(lo), abs(hi), 1.0))
  if grid is None or isinstance(grid, (int, np.integer)):
    num = 1000 if grid is None else int(grid)
    grid = np.linspace(lo - 6 * sigma, hi + 6 * sigma, num)
  grid = np.asarray(grid, dtype=np.float64)
  z = (grid[:, None, None] - nodes[None]) / sigma
  kernel = np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi))
  density = np.sum(kernel * weights[None], axis=(1, 2)) / num_runs
  return DensityResult(grid=grid, density=density, nodes=nodes,
                       weights=weights, sigma=float(sigma),
                       num_matvecs=matvecs)
