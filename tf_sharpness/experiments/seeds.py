"""Statistics over seeds."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def mean_std(values: Iterable[float | None]) -> list[float] | None:
  """[mean, sample standard deviation] of the values that are not None
  (std 0 for one value); None when there are none."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return None
  return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]


# Student's t 0.975 quantiles for 1..30 degrees of freedom (two-sided 95%).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_quantile_975(df: int) -> float:
  """The 0.975 quantile of Student's t with ``df`` degrees of freedom: the
  table up to 30, then the Cornish-Fisher expansion around the normal
  z = 1.95996 (error below 1e-4 there)."""
  if df < 1:
    raise ValueError(f"degrees of freedom must be at least 1, got {df}")
  if df <= len(_T975):
    return _T975[df - 1]
  z = 1.959964
  return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def paired_interval(differences: Iterable[float | None]) -> dict | None:
  """The mean of paired differences (one per seed, e.g. NSGD's test
  accuracy minus SGD's from the same seed) with its 95% t-interval
  mean +- t_{0.975, n-1} s / sqrt(n), n the pairs, s their sample standard
  deviation; ``positive`` counts the pairs above 0.  ``clear`` is True when
  the interval excludes 0 (the effect is larger than its uncertainty).
  None without pairs; with one pair the interval is unbounded (None)."""
  d = np.array([float(v) for v in differences if v is not None])
  if d.size == 0:
    return None
  mean = float(d.mean())
  if d.size == 1:
    low = high = None
  else:
    half = t_quantile_975(d.size - 1) * float(d.std(ddof=1)) / np.sqrt(d.size)
    low, high = mean - half, mean + half
  return {"mean": mean, "low": low, "high": high, "n": int(d.size),
          "positive": int((d > 0).sum()),
          "clear": low is not None and (low > 0 or high < 0)}


def ratio_interval(ratios: Iterable[float | None]) -> dict | None:
  """A paired ratio (e.g. lambda_max over SGD's from the same seed) as its
  geometric mean with the 95% t-interval of the mean log ratio mapped back:
  exp(mean log r +- t s / sqrt(n)); ``positive`` counts the ratios above 1,
  ``clear`` is True when the interval excludes 1."""
  ratios = [float(r) for r in ratios if r is not None]
  if any(r <= 0 for r in ratios):
    raise ValueError(f"ratios must be positive, got {ratios}")
  logs = paired_interval(np.log(ratios))
  if logs is None:
    return None
  back = lambda v: None if v is None else float(np.exp(v))
  return {"mean": back(logs["mean"]), "low": back(logs["low"]), "high": back(logs["high"]),
          "n": logs["n"], "positive": logs["positive"], "clear": logs["clear"]}
