"""Self-stabilization at the edge of stability (Damian, Nichani & Lee 2023).

Write S(theta) = u^T H(theta) u for the top eigenvector u (S = lambda_1) and
g = grad L.  A GD step -eta g changes S by -eta g^T grad S to first order.
Below the threshold, progressive sharpening is g^T grad S < 0 (each step
raises S).  Above 2/eta the iterate oscillates along u with amplitude x,
and the loss gradient gains the cubic term (x^2 / 2) grad S, which turns
g^T grad S positive: the step lowers S back towards 2/eta.  The prediction
measured here: at the edge of stability the cosine cos(grad S, g) is
larger at the steps where S >= 2/eta than at those where S < 2/eta, and
positive there; in a run that stays below 2/eta it is negative.

Full-batch GD on the EoS configuration (``eos.cfg``: tanh FCN 2x200, MSE,
1,000 CIFAR-10 images) at each learning rate and seed; every ``every`` steps
(odd by default, so the measurements alternate between the two phases of
the period-2 oscillation) the top eigenpair by Lanczos, grad S by the
gradient of one HVP (``directional.sharpness_gradient``), its cosine and
its inner product with g.  A run's summary, over the measurements from
``from_step`` on, split at S = 2/eta ("above" / "below"): how many, the
mean cosine, the share of positive cosines and the mean first-order change
of S per step, -eta g^T grad S.  Over seeds, per learning rate: the
per-seed means with their 95% t-interval, and the paired difference
above - below.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tf_sharpness import reuse, training
from tf_sharpness.config import (check_fields, like, seeds_setting, setting,
                                 settings_from_json, settings_json)
from tf_sharpness.experiments.seeds import paired_interval
from tf_sharpness.reports import tables

EXPERIMENT = "self_stabilization"  # the "experiment" key of its JSON, = the subcommand
SIDES = ("above", "below")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Full-batch GD (the shipped eos.cfg) at each learning rate and seed,
  with grad lambda_1 every ``every`` steps."""
  dataset: str = like("dataset")
  learning_rates: tuple = setting((0.02, 0.005), "GD learning rates (eos.cfg's 0.02 reaches "
                                  "2/eta within 100 steps; 0.005 stays below it).",
                                  items=float, item_above=0, nonempty=True)
  seeds: tuple = seeds_setting((0, 1, 2), "Seeds (initialization and subset): one run "
                               "per learning rate and seed.")
  steps: int = like("steps", 1000)
  every: int = setting(5, "Steps between measurements of lambda_1 and its gradient.",
                       minimum=1)
  from_step: int = setting(100, "The summary counts measurements from this step on "
                           "(after the early drop of the sharpness).", minimum=0)
  out: str = setting("runs/self_stabilization", "Output folder.")

  def __post_init__(self):
    check_fields(self)

  def config(self, base: training.Config, learning_rate: float,
             seed: int) -> training.Config:
    return dataclasses.replace(
        base, dataset=self.dataset, learning_rate=learning_rate, seed=seed,
        steps=self.steps, spectrum_every=self.every, spectrum_k=1,
        directional_every=self.every, directional_quantities=("self_stabilization",),
        log_every=self.every, checkpoint_every=max(self.every, 250),
        logdir=os.path.join(self.out, f"lr{learning_rate:g}_seed{seed}"))


def summarize(records: list[dict], learning_rate: float, seed: int,
              from_step: int) -> dict:
  """One run: lambda_1, cos(grad lambda_1, g) and -eta g^T grad lambda_1
  along it, and their means above and below 2/eta from ``from_step`` on."""
  limit = 2.0 / learning_rate
  measured = [r for r in records
              if (r.get("directional") or {}).get("self_stabilization") is not None]
  series = {"steps": [r["step"] for r in measured],
            "lambda_1": [r["directional"]["self_stabilization"]["lambda_1"] for r in measured],
            "cosine": [r["directional"]["self_stabilization"]["cosine_with_loss_gradient"]
                       for r in measured],
            "change": [-learning_rate * r["directional"]["self_stabilization"].get(
                "inner_with_loss_gradient", np.nan) for r in measured]}
  sides = {}
  late = [i for i, s in enumerate(series["steps"]) if s >= from_step]
  for side in SIDES:
    pick = [i for i in late if (series["lambda_1"][i] >= limit) == (side == "above")]
    cos = np.array([series["cosine"][i] for i in pick])
    change = np.array([series["change"][i] for i in pick])
    sides[side] = {"count": len(pick),
                   "mean_cosine": float(cos.mean()) if pick else None,
                   "positive_share": float((cos > 0).mean()) if pick else None,
                   "mean_change": float(change.mean()) if pick else None}
  return {"learning_rate": learning_rate, "seed": seed, "threshold": limit,
          "diverged": bool(records[-1].get("diverged")), "series": series, "sides": sides}


@dataclasses.dataclass
class Result:
  settings: Settings
  runs: list[dict]

  def to_json(self) -> dict:
    return {"experiment": EXPERIMENT, "settings": settings_json(self.settings),
            "runs": self.runs}

  @classmethod
  def from_json(cls, data) -> "Result":
    if not isinstance(data, dict) or data.get("experiment") != EXPERIMENT:
      raise ValueError(f"not the JSON of {EXPERIMENT}")
    return cls(settings_from_json(Settings, data["settings"]), data["runs"])


def run(settings: Settings, base: training.Config, on_run=None) -> Result:
  """Every (learning rate, seed) from ``base`` trained (or reused), summarized."""
  runs = []
  for lr in settings.learning_rates:
    for seed in settings.seeds:
      records = reuse.train_or_reuse(settings.config(base, lr, seed))
      runs.append(summarize(records, lr, seed, settings.from_step))
      if on_run is not None:
        on_run(runs[-1])
  return Result(settings, runs)


def _interval(values) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return tables.MISSING
  ci = paired_interval(values)
  if ci["low"] is None:
    return f"{ci['mean']:+.3f} (1 seed)"
  return f"{ci['mean']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def table(result: Result) -> str:
  """Per learning rate and side of 2/eta: measurements, the mean cosine
  over seeds with its 95% t-interval (per-seed means), the seeds with a
  positive mean, the share of positive cosines and the first-order change
  of lambda_1 per step; then the paired difference above - below."""
  lines = [tables.header(["eta", "2/eta", "lambda_1 vs 2/eta", "seeds", "measurements",
                          "mean cos(∇λ1, ∇L) [95% CI over seeds]", "seeds with mean > 0",
                          "share of cos > 0", "mean -η ∇L·∇λ1 per step"])]
  for lr in result.settings.learning_rates:
    runs = [r for r in result.runs if r["learning_rate"] == lr and not r["diverged"]]
    for side in SIDES:
      got = [r["sides"][side] for r in runs if r["sides"][side]["count"]]
      cosines = [s["mean_cosine"] for s in got]
      share = np.mean([s["positive_share"] for s in got]) if got else None
      change = np.mean([s["mean_change"] for s in got]) if got else None
      lines.append(
          f"| {lr:g} | {2 / lr:.1f} | {side} | {len(got)} | "
          f"{sum(s['count'] for s in got)} | {_interval(cosines)} | "
          f"{sum(c > 0 for c in cosines)}/{len(got)} | "
          f"{tables.MISSING if share is None else f'{100 * share:.0f}%'} | "
          f"{tables.MISSING if change is None else f'{change:+.3g}'} |")
    pairs = [r["sides"]["above"]["mean_cosine"] - r["sides"]["below"]["mean_cosine"]
             for r in runs if r["sides"]["above"]["count"] and r["sides"]["below"]["count"]]
    if pairs:
      ci = paired_interval(pairs)
      lines.append(f"| {lr:g} | {2 / lr:.1f} | above - below (paired) | {ci['n']} | | "
                   f"{_interval(pairs)} | {ci['positive']}/{ci['n']} | | |")
  return "\n".join(lines)
