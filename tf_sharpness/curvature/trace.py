"""Stochastic trace estimation.

Hutchinson's estimator: for Rademacher z (E[z z^T] = I), E[z^T A z] = tr A.
With S independent probes the estimate is the sample mean of z_s^T A z_s and
its standard error is the sample standard deviation over sqrt(S).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tf_sharpness.curvature.lanczos import Progress, ProgressFn, _check_positive_int
from tf_sharpness.curvature.linear_operator import flat_matvec


@dataclasses.dataclass
class TraceResult:
  estimate: float
  stderr: float
  num_matvecs: int
  samples: np.ndarray


def _reporter(progress, method, total):
  """A function of the matvec count that forwards to ``progress``."""
  started = time.perf_counter()
  if progress is None:
    return lambda done: None
  return lambda done: progress(Progress(method, done, time.perf_counter() - started,
                                        done=done == total))


def hessian_trace(operator, *, num_samples: int = 100, seed: int = 0,
                  progress: ProgressFn | None = None) -> TraceResult:
  """Hutchinson estimate of tr(A) with Rademacher probes and its std. error."""
  _check_positive_int("num_samples", num_samples)
  if num_samples < 2:
    raise ValueError("num_samples must be >= 2 to estimate a standard error")
  apply = flat_matvec(operator)
  rng = np.random.default_rng(seed)
  report = _reporter(progress, "Hutchinson trace", num_samples)
  samples = np.empty(num_samples)
  for s in range(num_samples):
    z = rng.choice([-1.0, 1.0], size=operator.dim)
    samples[s] = z @ apply(z)
    report(s + 1)
  return TraceResult(estimate=float(samples.mean()),
                     stderr=float(samples.std(ddof=1) / np.sqrt(num_samples)),
                     num_matvecs=num_samples,
                     samples=samples)


def hutchpp_trace(operator, *, num_matvecs: int = 99, seed: int = 0,
                  progress: ProgressFn | None = None) -> TraceResult:
  """Hutch++ (Meyer, Musco, Musco & Woodruff 2021) estimate of tr(A).

  With m = ``num_matvecs`` split in three: S (n x m/3) random signs,
  Q = orth(A S); then tr(A) = tr(Q^T A Q) + tr((I - QQ^T) A (I - QQ^T)),
  the first term exact and the second by Hutchinson with m/3 probes
  projected off Q.  For spectra with a few large eigenvalues (Hessians of
  networks) the variance is far below Hutchinson's at the same cost.
  ``stderr`` is the Hutchinson part's standard error; ``samples`` its probes.
  """
  _check_positive_int("num_matvecs", num_matvecs)
  if num_matvecs < 6:
    raise ValueError("num_matvecs must be >= 6 for Hutch++")
  apply = flat_matvec(operator)
  rng = np.random.default_rng(seed)
  k = num_matvecs // 3
  r = num_matvecs - 2 * k
  report = _reporter(progress, "Hutch++ trace", 2 * k + r)
  done = 0

  def counted(x):
    nonlocal done
    y = apply(x)
    done += 1
    report(done)
    return y

  s = rng.choice([-1.0, 1.0], size=(operator.dim, k))
  q, _ = np.linalg.qr(np.stack([counted(s[:, j]) for j in range(k)], axis=1))
  aq = np.stack([counted(q[:, j]) for j in range(k)], axis=1)
  top = float(np.trace(q.T @ aq))
  samples = np.empty(r)
  for j in range(r):
    g = rng.choice([-1.0, 1.0], size=operator.dim)
    g -= q @ (q.T @ g)
    samples[j] = g @ counted(g)
  stderr = float(samples.std(ddof=1) / np.sqrt(r)) if r > 1 else float("nan")
  return TraceResult(estimate=top + float(samples.mean()), stderr=stderr,
                     num_matvecs=2 * k + r, samples=samples)
