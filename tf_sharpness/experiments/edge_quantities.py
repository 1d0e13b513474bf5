"""Which curvature sits at 2/eta under SGD?  lambda_max (Cohen et al. 2021
for full-batch GD), batch sharpness E_B[g_B^T H_B g_B / ||g_B||^2]
(Andreyev & Beneventano: under SGD it is this that stabilizes at 2/eta),
the directional curvature along the update and the critical sharpness
2/eta_c along it (Kalra et al. 2026).

SGD at each learning rate, once per seed; every ``every`` steps the top
eigenvalue (Lanczos on the Hessian data) and ``DirectionalProbe``'s
quantities (batch sharpness over ``minibatches`` training batches of the
step).  A run's summary, for each quantity q over the last
``late_fraction`` of its measurements: the median of q / (2/eta) (the
critical sharpness is heavy-tailed: where the minibatch update is barely a
descent direction for the loss on the Hessian data, eta_c -> 0 and 2/eta_c
explodes, so a mean would be one outlier's), the mean beside it, the
fraction above 1 and the fraction that is infinite (the loss rises at any
step along the update: no descent direction there).  Over seeds: mean and
std of the late median, and the seed range.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tf_sharpness import reuse, training
from tf_sharpness.config import (check_fields, like, seeds_setting, setting,
                                 settings_from_json, settings_json)
from tf_sharpness.errors import ConfigError
from tf_sharpness.experiments.seeds import mean_std
from tf_sharpness.reports import tables

EXPERIMENT = "edge_quantities"  # the "experiment" key of its JSON, = the subcommand
QUANTITIES = ("lambda_max", "batch", "update", "critical_update", "gradient")


@dataclasses.dataclass(frozen=True)
class Settings:
  """SGD at each learning rate and seed, measured every ``every`` steps."""
  dataset: str = like("dataset")
  train_order: str = like("train_order")
  model: str = like("model")
  train_size: int = like("train_size", 5000, minimum=10)
  batch_size: int = like("batch_size", 128, minimum=1)
  hessian_fraction: float = like("hessian_fraction")
  learning_rates: tuple = setting((0.01, 0.05), "SGD learning rates.", items=float,
                                  item_above=0, nonempty=True)
  seeds: tuple = seeds_setting((0, 1, 2), "Seeds: one run per learning rate and seed.")
  steps: int = like("steps", 1560)
  every: int = setting(20, "Steps between measurements.", minimum=1)
  minibatches: int = like("landscape_minibatches", 4,
                          help="Training batches of the step that batch sharpness "
                               "averages over.")
  late_fraction: float = setting(0.25, "Fraction of the measurements that count as late.")
  out: str = setting("runs/edge_quantities", "Output folder.")

  def __post_init__(self):
    check_fields(self)
    if not 0 < self.late_fraction <= 1:
      raise ConfigError(f"`late_fraction` must be in (0, 1], got {self.late_fraction}")

  def config(self, learning_rate: float, seed: int) -> training.Config:
    return training.Config(
        dataset=self.dataset, model=self.model, train_size=self.train_size,
        optimizer="sgd", learning_rate=learning_rate, batch_size=self.batch_size,
        steps=self.steps, spectrum_every=self.every, spectrum_k=1,
        hessian_fraction=self.hessian_fraction, directional_every=self.every,
        directional_quantities=("gradient", "update", "critical_update", "batch"),
        landscape_minibatches=self.minibatches, eval_every=self.every,
        log_every=self.every, checkpoint_every=self.every, seed=seed,
        train_order=self.train_order,
        logdir=os.path.join(self.out, f"lr{learning_rate:g}_seed{seed}"))


def summarize(records: list[dict], learning_rate: float, seed: int,
              late_fraction: float) -> dict:
  """One run: each quantity along the run and its late ratio to 2/eta."""
  limit = 2.0 / learning_rate
  measured = [r for r in records if "directional" in r and "top_eigenvalues" in r]
  series = {"steps": [r["step"] for r in measured],
            "lambda_max": [r["top_eigenvalues"][0] for r in measured]}
  for q in QUANTITIES[1:]:
    series[q] = [r["directional"].get(q) for r in measured]
  late = slice(int(len(measured) * (1 - late_fraction)), None)
  ratios = {}
  for q in QUANTITIES:
    values = np.array([v for v in series[q][late] if v is not None and not np.isnan(v)],
                      dtype=np.float64)
    finite = values[np.isfinite(values)]
    ratios[q] = {"late_ratio": float(np.median(values) / limit) if values.size else None,
                 "late_mean_ratio": float(finite.mean() / limit) if finite.size else None,
                 "late_above": float((values > limit).mean()) if values.size else None,
                 "late_infinite": float((~np.isfinite(values)).mean()) if values.size
                 else None}
  return {"learning_rate": learning_rate, "seed": seed, "threshold": limit,
          "diverged": bool(records[-1].get("diverged")), "series": series, "late": ratios}


@dataclasses.dataclass
class Result:
  settings: Settings
  runs: list[dict]

  def to_json(self) -> dict:
    return {"experiment": EXPERIMENT,
            "settings": settings_json(self.settings),
            "runs": self.runs}

  @classmethod
  def from_json(cls, data) -> "Result":
    if not isinstance(data, dict) or data.get("experiment") != EXPERIMENT:
      raise ValueError(f"not the JSON of {EXPERIMENT}")
    settings = settings_from_json(Settings, data["settings"])
    return cls(settings, data["runs"])


def run(settings: Settings, on_run=None) -> Result:
  """Every (learning rate, seed) trained (or reused), summarized."""
  runs = []
  for lr in settings.learning_rates:
    for seed in settings.seeds:
      records = reuse.train_or_reuse(settings.config(lr, seed))
      runs.append(summarize(records, lr, seed, settings.late_fraction))
      if on_run is not None:
        on_run(runs[-1])
  return Result(settings, runs)


def table(result: Result) -> str:
  """Per learning rate and quantity: the late median ratio to 2/eta, mean +-
  std over the seeds (range), the share of late measurements above it and
  the share that is infinite."""
  lines = [tables.header(["eta", "2/eta", "quantity", "seeds", "late median / (2/eta)",
                          "seed range", "late measurements above 2/eta",
                          "infinite (no descent)"])]
  for lr in result.settings.learning_rates:
    runs = [r for r in result.runs if r["learning_rate"] == lr and not r["diverged"]]
    for q in QUANTITIES:
      ratios = [r["late"][q]["late_ratio"] for r in runs
                if r["late"][q]["late_ratio"] is not None]
      above = [r["late"][q]["late_above"] for r in runs
               if r["late"][q]["late_above"] is not None]
      finite = [r for r in ratios if np.isfinite(r)]
      ms = mean_std(finite)  # a seed whose late median is infinite is counted apart
      cell = tables.MISSING if ms is None else f"{ms[0]:.3f} ± {ms[1]:.3f}"
      if len(finite) < len(ratios):
        cell += f" (+{len(ratios) - len(finite)} seeds ∞)"
      span = tables.span(min(ratios, default=None), max(ratios, default=None), 3)
      share = tables.MISSING if not above else f"{100 * np.mean(above):.0f}%"
      infinite = [r["late"][q].get("late_infinite") for r in runs]
      infinite = [v for v in infinite if v is not None]
      inf_share = tables.MISSING if not infinite else f"{100 * np.mean(infinite):.0f}%"
      lines.append(f"| {lr:g} | {2 / lr:.1f} | {q} | {len(ratios)} | {cell} | {span} | "
                   f"{share} | {inf_share} |")
  return "\n".join(lines)
