"""Student's t distribution with an integer number of degrees of freedom:
its two-sided probability and quantiles, exact (no scipy).

With theta = atan(t / sqrt(nu)), A(t | nu) = P(|T| <= t) has the finite
closed forms (Abramowitz & Stegun 26.7.3-4):

* nu = 1: A = 2 theta / pi;
* nu odd > 1: A = (2/pi) [theta + sin(theta) cos(theta) (1 + (2/3) cos^2 +
  (2 4)/(3 5) cos^4 + ... + (2 4 ... (nu-3))/(3 5 ... (nu-2)) cos^(nu-3))];
* nu even: A = sin(theta) [1 + (1/2) cos^2 + (1 3)/(2 4) cos^4 + ... +
  (1 3 ... (nu-3))/(2 4 ... (nu-2)) cos^(nu-2)];

and the quantile t_p solves P(T <= t) = p by bisection on the monotone
A, to 1e-12.  Used for intervals over seeds and over Hessian batches.
"""

from __future__ import annotations

import math

__all__ = ["two_sided_probability", "quantile"]


def two_sided_probability(t: float, dof: int) -> float:
  """A(t | dof) = P(|T| <= t) for t >= 0."""
  if int(dof) != dof or dof < 1:
    raise ValueError(f"degrees of freedom must be a whole number >= 1, got {dof!r}")
  dof = int(dof)
  theta = math.atan(abs(t) / math.sqrt(dof))
  s, c2 = math.sin(theta), math.cos(theta) ** 2
  if dof % 2 == 1:
    total, term = (1.0, 1.0) if dof > 1 else (0.0, 0.0)
    for k in range(1, (dof - 1) // 2):  # terms up to cos^(dof-3)
      term *= c2 * (2 * k) / (2 * k + 1)
      total += term
    return 2 / math.pi * (theta + s * math.cos(theta) * total)
  total = term = 1.0
  for k in range(1, dof // 2):  # terms up to cos^(dof-2)
    term *= c2 * (2 * k - 1) / (2 * k)
    total += term
  return s * total


def quantile(p: float, dof: int) -> float:
  """t_p with P(T <= t_p) = p, 0 < p < 1."""
  if not 0 < p < 1:
    raise ValueError(f"p must be in (0, 1), got {p!r}")
  if p == 0.5:
    return 0.0
  target = abs(2 * p - 1)  # P(|T| <= t) at |t_p|
  low, high = 0.0, 1.0
  while two_sided_probability(high, dof) < target:
    high *= 2
  while high - low > 1e-12 * max(1.0, high):
    mid = 0.5 * (low + high)
    low, high = (mid, high) if two_sided_probability(mid, dof) < target else (low, mid)
  t = 0.5 * (low + high)
  return t if p > 0.5 else -t
