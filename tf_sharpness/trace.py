"""Stochastic trace estimation.

Hutchinson's estimator: for Rademacher z (E[z z^T] = I), E[z^T A z] = tr A.
With S independent probes the estimate is the sample mean of z_s^T A z_s and
its standard error is the sample standard deviation over sqrt(S).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_sharpness.lanczos import _check_positive_int
from tf_sharpness.linear_operator import flat_matvec


@dataclasses.dataclass
class TraceResult:
  estimate: float
  stderr: float
  num_matvecs: int
  samples: np.ndarray


def hessian_trace(operator, *, num_samples: int = 100,
                  seed: int = 0) -> TraceResult:
  """Hutchinson estimate of tr(A) with Rademacher probes and its std. error."""
  _check_positive_int("num_samples", num_samples)
  if num_samples < 2:
    raise ValueError("num_samples must be >= 2 to estimate a standard error")
  apply = flat_matvec(operator)
  rng = np.random.default_rng(seed)
  samples = np.empty(num_samples)
  for s in range(num_samples):
    z = rng.choice([-1.0, 1.0], size=operator.dim)
    samples[s] = z @ apply(z)
  return TraceResult(estimate=float(samples.mean()),
                     stderr=float(samples.std(ddof=1) / np.sqrt(num_samples)),
                     num_matvecs=num_samples,
                     samples=samples)
