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
