"""Statistics over seeds."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from tf_sharpness import student_t


def mean_std(values: Iterable[float | None]) -> list[float] | None:
  """[mean, sample standard deviation] of the values that are not None
  (std 0 for one value); None when there are none."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return None
  return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]


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
    half = student_t.quantile(0.975, d.size - 1) * float(d.std(ddof=1)) / np.sqrt(d.size)
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
