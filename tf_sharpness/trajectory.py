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

Two settings run with the same seeds (the seed sets the initialization) are
compared by ``paired_ratio``: over the seeds S where both have a value x_s
and a reference value r_s, the ratio of means sum_S x_s / sum_S r_s and the
per-seed ratios x_s / r_s.

Records are the dicts of a run's ``metrics.jsonl`` (``rundir.read_metrics``):
those with ``top_eigenvalues`` are measurements; ``train_loss`` may be absent
(None) where the loss was not evaluated.
"""

from typing import Any

import numpy as np


def summarize(records: list[dict[str, Any]], steps_per_epoch: float | None,
              loss_threshold: float) -> dict[str, Any]:
  """The summary above, with the trajectory itself (steps, epochs,
  lambda_max, train_loss), ``final_train_loss`` (the loss at the last
  measurement, None if it had none) and, from the run's last record,
  ``test_accuracy`` and ``diverged``.  The peak is given as ``peak_step``
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
  peak = int(np.argmax(tops))
  late_start = len(tops) - max(1, len(tops) // 4)
  late = tops[late_start:]
  reached = next(((s, t) for s, t, l in zip(steps, tops, losses)
                  if l is not None and l <= loss_threshold), (None, None))
  epochs = None if steps_per_epoch is None else [s / steps_per_epoch for s in steps]
  return {"steps": steps, "epochs": epochs,
          "lambda_max": tops, "train_loss": losses,
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
  above.  Returns lists: ``at_level`` and ``step_at_level`` (one per level,
  None where the loss never got there), ``band_mean`` and ``band_count``
  (one per band, len(levels) - 1; the mean is None for an empty band).

  Raises ValueError unless the levels decrease strictly."""
  if any(b >= a for a, b in zip(levels, levels[1:])):
    raise ValueError(f"loss levels must decrease strictly, got {list(levels)}")
  pairs = [(l, t) for l, t in zip(summary["train_loss"], summary["lambda_max"])
           if l is not None]
  steps = [s for s, l in zip(summary["steps"], summary["train_loss"]) if l is not None]
  at, step_at = [], []
  for level in levels:
    j = next((j for j, (l, _) in enumerate(pairs) if l <= level), None)
    at.append(None if j is None else pairs[j][1])
    step_at.append(None if j is None else steps[j])
  means, counts = [], []
  for high, low in zip(levels, levels[1:]):
    inside = [t for l, t in pairs if low < l <= high]
    means.append(float(np.mean(inside)) if inside else None)
    counts.append(len(inside))
  return {"levels": list(levels), "at_level": at, "step_at_level": step_at,
          "band_mean": means, "band_count": counts}


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
