"""An interval for the full-data lambda_max from a sample of the data.

The Hessian is measured on a sample S of n examples (Jastrzebski et al.:
~5% of the training set), H_S = (1/n) sum_{i in S} H_i, but the quantity
of interest is lambda_max(H) of the full-data Hessian H = E H_i.
lambda_max is convex in the matrix, so E lambda_max(H_S) >= lambda_max(H):
the plug-in value is biased upward, not only noisy.  With S split into m
disjoint batches b (m/2 in each half S1, S2), each an unbiased H_b of H:

* lower bound (cross-fitting): u = top eigenvector of H_{S1}, independent of
  S2; q_b = u^T H_b u over b in S2 are unbiased for u^T H u <= lambda_max(H),
  so mean(q) - t_{1-a/2} se(q) is a lower confidence bound;
* upper bound: the plug-in lambda_max(H_S) = u_S^T H_S u_S plus the
  bootstrap spread of the mean of q_b = u_S^T H_b u_S over the m batches
  (its 1 - a/2 quantile above the mean): the plug-in sits above
  lambda_max(H) on average, and the spread covers its downward fluctuation;
* the 1/n trend: lambda_max of the halves estimates the bias at n/2, twice
  that at n under bias ~ c/n, so ``bias_corrected`` = 2 lambda_max(H_S) -
  mean(lambda_max(H_{S1}), lambda_max(H_{S2}));
* the Lanczos residual ||H_S u - theta u|| is reported separately
  (``residual``): it bounds the distance of the Ritz value to an eigenvalue
  of H_S, a numerical error, not a sampling one.

Two-sided coverage is at least ``confidence`` by the union bound, given the
assumptions: the batches are exchangeable draws from the full data (a
random sample), their quotients' mean is near normal (the default m = 16
batches; with 8, a heavy-tailed quadratic covered 85% at confidence 0.9),
and the top eigenvector of H_{S1} is close enough to H's that the lower
bound is informative (it is valid regardless).  The sample size at which
the interval's width falls to ``fraction`` of lambda_max is extrapolated
from the width's 1/sqrt(n) scaling (``examples_for``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_sharpness import student_t
from tf_sharpness.curvature import vectors
from tf_sharpness.curvature.hvp import HessianOperator
from tf_sharpness.curvature.lanczos import top_eigenpairs

__all__ = ["LambdaInterval", "lambda_max_interval"]


@dataclasses.dataclass
class LambdaInterval:
  lower: float
  upper: float
  plug_in: float  # lambda_max(H_S)
  bias_corrected: float
  residual: float
  confidence: float
  examples: int
  batches: int
  num_matvecs: int

  @property
  def width(self) -> float:
    return self.upper - self.lower

  def examples_for(self, fraction: float) -> int:
    """Examples needed for width <= fraction * plug_in (width ~ 1/sqrt(n))."""
    if not 0 < fraction:
      raise ValueError(f"fraction must be positive, got {fraction!r}")
    target = fraction * abs(self.plug_in)
    return int(np.ceil(self.examples * (self.width / target) ** 2)) if target else 0


def lambda_max_interval(model, loss, data, *, confidence: float = 0.9, batches: int = 16,
                        seed: int = 0, bootstrap: int = 2000, tol: float = 1e-4,
                        operator_kwargs: dict | None = None,
                        operator: HessianOperator | None = None) -> LambdaInterval:
  """The interval of the module doc from ``data``, an (x, y) pair of arrays
  (the sample), split at random into ``batches`` disjoint batches.
  ``operator``: a ``HessianOperator`` of ``model`` and ``loss`` to reuse
  across calls (its data is replaced), so that repeated intervals (a probe)
  reuse its traced passes."""
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
  if isinstance(batches, bool) or not isinstance(batches, int) or batches < 4 or batches % 2:
    raise ValueError(f"batches must be an even integer >= 4, got {batches!r}")
  x, y = data
  import keras
  n = len(np.asarray(keras.tree.flatten(y)[0]))
  if n < batches:
    raise ValueError(f"data has {n} examples, fewer than batches={batches}")
  order = np.random.default_rng(seed).permutation(n)
  parts = np.array_split(order, batches)
  take = lambda idx: (_take(x, np.sort(idx)), _take(y, np.sort(idx)))
  kwargs = dict(operator_kwargs or {})
  if operator is None:
    op = HessianOperator(model, loss, take(order), **kwargs)
  else:
    op = operator
    op.set_data(take(order))
  half1, half2 = np.concatenate(parts[:batches // 2]), np.concatenate(parts[batches // 2:])

  def top(sample):
    op.set_data(take(sample))
    res = top_eigenpairs(op, k=1, tol=tol, seed=seed)
    return res.eigenvalues[0], res.eigenvectors[0], res.residual_norms[0], res.num_matvecs

  plug_in, u_all, residual, cost = top(order)
  lam1, u1, _, c1 = top(half1)
  lam2, _, _, c2 = top(half2)
  cost += c1 + c2

  def quotients(u, batch_list):
    nonlocal cost
    out = []
    flat_u = vectors.to_numpy(u)
    for idx in batch_list:
      op.set_data(take(idx))
      out.append(float(flat_u @ vectors.to_numpy(op.matvec(u))))
      cost += 1
    return np.array(out)

  alpha = 1 - confidence
  cross = quotients(u1, parts[batches // 2:])
  m2 = len(cross)
  t = student_t.quantile(1 - alpha / 2, m2 - 1)
  lower = cross.mean() - t * cross.std(ddof=1) / np.sqrt(m2)
  q = quotients(u_all, parts)
  rng = np.random.default_rng(seed + 1)
  means = q[rng.integers(0, len(q), (bootstrap, len(q)))].mean(axis=1)
  spread = float(np.quantile(means, 1 - alpha / 2) - means.mean())
  upper = plug_in + max(spread, 0.0)
  return LambdaInterval(lower=float(lower), upper=float(upper), plug_in=float(plug_in),
                        bias_corrected=float(2 * plug_in - 0.5 * (lam1 + lam2)),
                        residual=float(residual), confidence=confidence, examples=n,
                        batches=batches, num_matvecs=cost)


def _take(a, idx):
  import keras
  return keras.tree.map_structure(lambda t: np.asarray(t)[idx], a)
