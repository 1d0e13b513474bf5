"""The shape of a sharpness trajectory, read from a run's measurements.

A run measures the top Hessian eigenvalue lambda_max(t_i) and the training
loss L(t_i) at steps t_0 < t_1 < ... < t_n.  Jastrzebski et al. (2019,
Fig. 1) describe the trajectory by where it starts, how high it climbs and
where it settles; runs are also compared at equal training loss:

  initial         lambda_max(t_0)
  peak            max_i lambda_max(t_i), reached at t* = t_argmax (the first
                  of equal maxima)
  late mean       the mean of lambda_max over the late window, the last
                  floor((n+1)/4) measurements (at least one): the level it
                  settles at
  peaked          t* comes before the late window: lambda_max stayed below
                  its peak for the last quarter of the run.  A maximum inside
                  the late window may still be climbing, or be one high
                  value on a plateau.
  at loss L*      lambda_max(t_j) and t_j for the first j with L(t_j) <= L*
                  (None when the loss never gets there)

Comparing runs at several loss levels L_1 > L_2 > ... > L_m (``by_loss``):

  at L_k          lambda_max at the first measurement with L(t_j) <= L_k, as
                  above
  band k          the mean of lambda_max over every measurement with
                  L_{k+1} < L(t_j) <= L_k, and how many there are: one
                  measurement varies by tens of percent from the next, a
                  band averages the ones a run makes while its loss is there

A stretch of one run, the measurements with a <= x_i <= b where x is the
epoch (the step when epochs are unknown), is described by ``window``:

  count, mean, min, max   of lambda_max over the stretch
  above[name]             how many lambda_max(t_i) > the threshold ``name``
                          (e.g. 2/eta): at the edge of stability lambda_max
                          hovers around it rather than staying below
  slope                   the least-squares slope of lambda_max against x,
                          sum (x_i - xbar)(y_i - ybar) / sum (x_i - xbar)^2:
                          how fast it still climbs
  train loss              its mean, min and max over the stretch
  mean HVPs per measurement (where recorded)

``seconds_per_unit`` is the window's pace, (w(t_last) - w(t_first)) /
(x_last - x_first) from the wall times w of the run's event files, when one
process wrote both ends (a resume restarts the clock, and the time between
the processes is not training).

``first_at_or_above`` gives the first x_i with lambda_max(t_i) >= a value,
and ``largest_difference`` compares two runs of the same setting (a rerun)
at the steps both measured: max_i |a_i - b_i| / |b_i|.

Two settings run with the same seeds (the seed sets the initialization) are
compared by ``paired_ratio``: over the seeds S where both have a value x_s
and a reference value r_s, the ratio of means sum_S x_s / sum_S r_s and the
per-seed ratios x_s / r_s.

Records are the dicts of a run's ``metrics.jsonl`` (``rundir.read_metrics``):
those with ``top_eigenvalues`` are measurements; ``train_loss`` may be absent
(None) where the loss was not evaluated.
"""

import math
from typing import Any

import numpy as np


def summarize(records: list[dict[str, Any]], steps_per_epoch: float | None,
              loss_threshold: float) -> dict[str, Any]:
  """The summary above, with the trajectory itself (steps, epochs,
  lambda_max, train_loss), ``final_train_loss`` (the loss at the last
  measurement, None if it had none) and, from the run's last record,
  ``test_accuracy`` and ``diverged``; ``matvecs`` are the Hessian-vector
  products each measurement took (None where not recorded).  The peak is given as ``peak_step``
  and ``peak_epoch``; with ``steps_per_epoch=None`` (unknown) the epochs
  are None.

  Raises ValueError when no record carries a measurement."""
  measured = [r for r in records if r.get("top_eigenvalues")]
  if not measured:
    raise ValueError("the run has no lambda_max measurement (no record with "
                     "'top_eigenvalues'): was it trained with spectrum_every > 0?")
  steps = [int(r["step"]) for r in measured]
  tops = [float(r["top_eigenvalues"][0]) for r in measured]
  losses = [r.get("train_loss") for r in measured]
  matvecs = [r.get("spectrum_matvecs") for r in measured]
  peak = int(np.argmax(tops))
  late_start = len(tops) - max(1, len(tops) // 4)
  late = tops[late_start:]
  reached = next(((s, t) for s, t, l in zip(steps, tops, losses)
                  if l is not None and l <= loss_threshold), (None, None))
  epochs = None if steps_per_epoch is None else [s / steps_per_epoch for s in steps]
  return {"steps": steps, "epochs": epochs,
          "lambda_max": tops, "train_loss": losses, "matvecs": matvecs,
          "diverged": bool(records[-1].get("diverged")),
          "initial_lambda_max": tops[0], "peak_lambda_max": tops[peak],
          "peak_step": steps[peak], "peak_epoch": None if epochs is None else epochs[peak],
          "peaked": peak < late_start,
          "late_mean_lambda_max": float(np.mean(late)),
          "step_at_loss_threshold": reached[0],
          "lambda_max_at_loss_threshold": reached[1],
          "test_accuracy": records[-1].get("test_accuracy"),
          "final_train_loss": losses[-1]}


def by_loss(summary: dict[str, Any], levels: list[float]) -> dict[str, Any]:
  """lambda_max of a ``summarize``d run at the loss ``levels`` (strictly
  decreasing) and in the bands between consecutive levels, as stated
  above.  Returns lists: ``at_level``, ``step_at_level`` and
  ``index_at_level`` (the measurement's index; one per level, None where
  the loss never got there), ``band_mean`` and ``band_count``
  (one per band, len(levels) - 1; the mean is None for an empty band).

  Raises ValueError unless the levels decrease strictly."""
  if any(b >= a for a, b in zip(levels, levels[1:])):
    raise ValueError(f"loss levels must decrease strictly, got {list(levels)}")
  pairs = [(l, t) for l, t in zip(summary["train_loss"], summary["lambda_max"])
           if l is not None]
  index = [i for i, l in enumerate(summary["train_loss"]) if l is not None]
  at, step_at, index_at = [], [], []
  for level in levels:
    j = next((j for j, (l, _) in enumerate(pairs) if l <= level), None)
    at.append(None if j is None else pairs[j][1])
    step_at.append(None if j is None else summary["steps"][index[j]])
    index_at.append(None if j is None else index[j])
  means, counts = [], []
  for high, low in zip(levels, levels[1:]):
    inside = [t for l, t in pairs if low < l <= high]
    means.append(float(np.mean(inside)) if inside else None)
    counts.append(len(inside))
  return {"levels": list(levels), "at_level": at, "step_at_level": step_at,
          "index_at_level": index_at, "band_mean": means, "band_count": counts}


def x_values(summary: dict[str, Any]) -> list[float]:
  """The epochs of the measurements, or their steps when epochs are unknown."""
  return summary["epochs"] if summary["epochs"] is not None else summary["steps"]


def _mean(values: list) -> float | None:
  known = [v for v in values if v is not None]
  return float(np.mean(known)) if known else None


def window(summary: dict[str, Any], start: float, end: float,
           thresholds: dict[str, float]) -> dict[str, Any]:
  """The statistics above of a ``summarize``d run over start <= x <= end
  (epochs, or steps when epochs are unknown): ``count``, ``mean``, ``min``,
  ``max``, ``above`` (a count per threshold), ``slope`` (None with fewer
  than two measurements or one x), ``mean_train_loss``,
  ``min_train_loss``, ``max_train_loss`` and ``mean_matvecs`` (None where
  none is recorded).  An empty window has
  count 0 and None for the rest, and 0 above every threshold.

  Raises ValueError when start > end."""
  if start > end:
    raise ValueError(f"a window must start before it ends, got {start:g}:{end:g}")
  matvecs = summary.get("matvecs") or [None] * len(summary["lambda_max"])  # older summaries
  inside = [i for i, x in enumerate(x_values(summary)) if start <= x <= end]
  losses = [summary["train_loss"][i] for i in inside if summary["train_loss"][i] is not None]
  x = np.array([x_values(summary)[i] for i in inside], dtype=float)
  y = np.array([summary["lambda_max"][i] for i in inside], dtype=float)
  spread = float(np.sum((x - x.mean()) ** 2)) if len(x) else 0.0
  slope = (float(np.sum((x - x.mean()) * (y - y.mean())) / spread)
           if len(x) > 1 and spread > 0 else None)
  return {"start": start, "end": end, "count": len(inside),
          "mean": float(y.mean()) if len(y) else None,
          "min": float(y.min()) if len(y) else None,
          "max": float(y.max()) if len(y) else None,
          "above": {name: int(np.sum(y > value)) for name, value in thresholds.items()},
          "slope": slope,
          "mean_train_loss": _mean(losses),
          "min_train_loss": min(losses, default=None),
          "max_train_loss": max(losses, default=None),
          "mean_matvecs": _mean([matvecs[i] for i in inside])}


def seconds_per_unit(summary: dict[str, Any], start: float, end: float,
                     wall: dict[int, tuple[int, float]]) -> float | None:
  """The pace above over the measurements with start <= x <= end; ``wall``
  maps a step to (event file index, wall time) as
  ``rundir.event_wall_times`` gives it.  None with fewer than two
  measurements, an end without a wall time, or ends in different files."""
  inside = [(x, s) for x, s in zip(x_values(summary), summary["steps"]) if start <= x <= end]
  if len(inside) < 2 or inside[0][1] not in wall or inside[-1][1] not in wall:
    return None
  (x0, s0), (x1, s1) = inside[0], inside[-1]
  (file0, w0), (file1, w1) = wall[s0], wall[s1]
  return (w1 - w0) / (x1 - x0) if file0 == file1 and x1 > x0 else None


def first_at_or_above(summary: dict[str, Any], value: float) -> float | None:
  """The first x (epoch, or step when epochs are unknown) at which
  lambda_max >= value; None when it never gets there."""
  return next((x for x, t in zip(x_values(summary), summary["lambda_max"]) if t >= value), None)


def largest_difference(summary: dict[str, Any], reference: dict[str, Any]
                       ) -> dict[str, Any] | None:
  """max_i |a_i - b_i| / |b_i| of lambda_max over the steps both runs
  measured (a from ``summary``, b from ``reference``), with its ``step``
  and the number of ``shared`` steps; None when they share no step with
  b != 0."""
  theirs = dict(zip(reference["steps"], reference["lambda_max"]))
  pairs = [(s, a, theirs[s]) for s, a in zip(summary["steps"], summary["lambda_max"])
           if theirs.get(s) not in (None, 0)]
  if not pairs:
    return None
  step, a, b = max(pairs, key=lambda p: abs(p[1] - p[2]) / abs(p[2]))
  return {"relative": abs(a - b) / abs(b), "step": step, "value": a, "reference": b,
          "shared": len(pairs)}


def parse_windows(specs: list[str]) -> list[tuple[float, float]]:
  """Windows written "A:B" (as on a command line) as (A, B) pairs.

  Raises ValueError unless each is two numbers with A <= B."""
  try:
    windows = [tuple(float(v) for v in spec.split(":")) for spec in specs]
  except ValueError:
    windows = [()]
  if any(len(w) != 2 or not all(map(math.isfinite, w)) or w[0] > w[1] for w in windows):
    raise ValueError("each window is A:B with A <= B, e.g. 100:150,150:200")
  return windows


def parse_levels(specs: list[str]) -> list[float]:
  """Loss levels written as numbers; raises ValueError unless they
  decrease strictly."""
  try:
    levels = [float(v) for v in specs]
  except ValueError:
    levels = []
  if (len(levels) != len(specs) or not all(map(math.isfinite, levels))
      or any(b >= a for a, b in zip(levels, levels[1:]))):
    raise ValueError("finite numbers that decrease strictly, e.g. 1.0,0.5")
  return levels


def paired_ratio(values: dict[int, float | None], reference: dict[int, float | None]
                 ) -> tuple[float, list[float]] | None:
  """(ratio of means, per-seed ratios) of ``values`` to ``reference``, both
  keyed by seed, over the seeds where both have a value (and the reference
  is not 0); None when there is no such seed."""
  seeds = [s for s, v in values.items()
           if v is not None and reference.get(s) not in (None, 0)]
  if not seeds:
    return None
  mine = np.array([values[s] for s in seeds], dtype=float)
  theirs = np.array([reference[s] for s in seeds], dtype=float)
  return float(mine.sum() / theirs.sum()), [float(r) for r in mine / theirs]
