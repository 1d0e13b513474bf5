"""Self-stabilization at the edge of stability (Damian, Nichani & Lee 2023).

Write S(theta) = u^T H(theta) u for the top eigenvector u (S = lambda_1),
g = grad L.  A GD step -eta g changes S by -eta g^T grad S to first order;
progressive sharpening is g^T grad S < 0.  At the edge of stability the
iterate oscillates along u, theta = theta* + x u, and

    g = g* + x lambda_1 u + (x^2 / 2) grad S + O(x^3).

The middle term flips sign every step and decides the sign of g^T grad S
step by step (its phase also decides whether S is above or below 2/eta, so
splitting measurements at 2/eta would sort them by phase, not test the
theory).  Without the component along u, g_perp = g - (u^T g) u, what is
left is g*^T grad S < 0 (sharpening) plus (x^2 / 2) ||grad S||^2 > 0: the
oscillation pushes S down, the more the larger x.  The prediction
measured: at the edge of stability cos(grad S, g_perp) is larger at the
steps with a large oscillation, measured by the share of the loss gradient
along u, r = (u^T g)^2 / ||g||^2 (x lambda_1 = u^T g - u^T g*), than at
those with a small one; in a run below 2/eta (no oscillation) it is
negative.

Full-batch GD on the EoS configuration (``eos.cfg``: tanh FCN 2x200, MSE,
1,000 CIFAR-10 images) at each learning rate and seed; every ``every``
steps the top eigenpair by Lanczos and grad S by the gradient of one HVP
(``directional.sharpness_gradient``).  A run's summary, over the
measurements from ``from_step`` on: lambda_1 over 2/eta, the mean share r,
the mean cosines with g and with g_perp, and the mean cos(grad S, g_perp)
in the half of the measurements with r above the run's median minus that
in the other half, with the rank correlation of r and the cosine.  Over
seeds, per learning rate: means with their 95% t-interval.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tf_sharpness import reuse, training
from tf_sharpness.config import (check_fields, like, seeds_setting, setting,
                                 settings_from_json, settings_json)
from tf_sharpness.experiments.seeds import paired_interval
from tf_sharpness.reports import plotting, tables

EXPERIMENT = "self_stabilization"  # the "experiment" key of its JSON, = the subcommand


@dataclasses.dataclass(frozen=True)
class Settings:
  """Full-batch GD (the shipped eos.cfg) at each learning rate and seed,
  with grad lambda_1 every ``every`` steps."""
  dataset: str = like("dataset")
  train_order: str = like("train_order")
  learning_rates: tuple = setting((0.02, 0.005), "GD learning rates (with eos.cfg lambda_1 "
                                  "falls from ~380 to 2/eta = 100 within 100 steps at 0.02 "
                                  "and stays there; at 0.005 it stays below 2/eta = 400).",
                                  items=float, item_above=0, nonempty=True)
  seeds: tuple = seeds_setting((0, 1, 2), "Seeds (initialization and subset): one run "
                               "per learning rate and seed.")
  steps: int = like("steps", 1000)
  every: int = setting(5, "Steps between measurements of lambda_1 and its gradient.",
                       minimum=1)
  from_step: int = setting(500, "The summary counts measurements from this step on "
                           "(after the early drop of the sharpness, ~500 steps at eta = "
                           "0.005).", minimum=0)
  out: str = setting("runs/self_stabilization", "Output folder.")

  def __post_init__(self):
    check_fields(self)

  def config(self, base: training.Config, learning_rate: float,
             seed: int) -> training.Config:
    return dataclasses.replace(
        base, dataset=self.dataset, learning_rate=learning_rate, seed=seed,
        train_order=self.train_order,
        steps=self.steps, spectrum_every=self.every, spectrum_k=1,
        directional_every=self.every, directional_quantities=("self_stabilization",),
        log_every=self.every, checkpoint_every=max(self.every, 250),
        logdir=os.path.join(self.out, f"lr{learning_rate:g}_seed{seed}"))


def _ranks(values: np.ndarray) -> np.ndarray:
  return np.argsort(np.argsort(values)).astype(np.float64)


def summarize(records: list[dict], learning_rate: float, seed: int,
              from_step: int) -> dict:
  """One run: lambda_1, r = (u^T g)^2 / ||g||^2 and the cosines of grad
  lambda_1 with g and with g_perp along it, and their late summary."""
  limit = 2.0 / learning_rate
  got = [(r["step"], r["directional"]["self_stabilization"]) for r in records
         if (r.get("directional") or {}).get("self_stabilization") is not None]
  series = {"steps": [s for s, _ in got],
            "lambda_1": [v["lambda_1"] for _, v in got],
            "cosine": [v["cosine_with_loss_gradient"] for _, v in got],
            "cosine_without_u": [v.get("cosine_without_u") for _, v in got],
            "share_along_u": [(v["u_dot_loss_gradient"] / v["loss_gradient_norm"]) ** 2
                              if v.get("loss_gradient_norm") else None for _, v in got]}
  late = [i for i, s in enumerate(series["steps"]) if s >= from_step
          and series["cosine_without_u"][i] is not None
          and series["share_along_u"][i] is not None]
  pick = lambda key: np.array([series[key][i] for i in late], dtype=np.float64)
  share, perp = pick("share_along_u"), pick("cosine_without_u")
  late_summary = None
  if late:
    large = share > np.median(share)
    difference = (float(perp[large].mean() - perp[~large].mean())
                  if large.any() and (~large).any() else None)
    spearman = (float(np.corrcoef(_ranks(share), _ranks(perp))[0, 1])
                if len(late) > 2 and share.std() > 0 and perp.std() > 0 else None)
    late_summary = {"count": len(late),
                    "lambda_1_ratio": float(pick("lambda_1").mean() / limit),
                    "share_along_u": float(share.mean()),
                    "cosine": float(pick("cosine").mean()),
                    "cosine_without_u": float(perp.mean()),
                    "large_minus_small": difference, "spearman": spearman}
  return {"learning_rate": learning_rate, "seed": seed, "threshold": limit,
          "diverged": bool(records[-1].get("diverged")), "series": series,
          "late": late_summary}


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
  """mean [95% t-interval] over the seeds."""
  values = [v for v in values if v is not None]
  if not values:
    return tables.MISSING
  ci = paired_interval(values)
  if ci["low"] is None:
    return f"{ci['mean']:+.3f} (1 seed)"
  return f"{ci['mean']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def table(result: Result) -> str:
  """Per learning rate, over the seeds (each seed's late means): lambda_1
  over 2/eta, the share r of the loss gradient along u, cos(grad lambda_1,
  g), cos(grad lambda_1, g_perp), and the difference of the latter between
  the measurements with r above and below the run's median with the seeds
  where it is positive, and the rank correlation of r and cos(., g_perp)."""
  lines = [tables.header(["eta", "2/eta", "seeds (diverged)", "late measurements",
                          "λ1 / (2/η)", "share of g along u", "cos(∇λ1, g)",
                          "cos(∇λ1, g⊥)", "cos(∇λ1, g⊥): large − small oscillation",
                          "seeds > 0", "rank corr. (share, cos g⊥)"])]
  for lr in result.settings.learning_rates:
    runs = [r for r in result.runs if r["learning_rate"] == lr]
    late = [r["late"] for r in runs if not r["diverged"] and r["late"]]
    column = lambda key: [s[key] for s in late]
    diffs = [d for d in column("large_minus_small") if d is not None]
    share = column("share_along_u")
    lines.append(
        f"| {lr:g} | {2 / lr:.1f} | {len(late)} ({sum(r['diverged'] for r in runs)}) | "
        f"{sum(column('count'))} | "
        + (f"{np.mean(column('lambda_1_ratio')):.3f} | {np.mean(share):.3g} | "
           if late else f"{tables.MISSING} | {tables.MISSING} | ")
        + f"{_interval(column('cosine'))} | {_interval(column('cosine_without_u'))} | "
        f"{_interval(diffs)} | {sum(d > 0 for d in diffs)}/{len(diffs)} | "
        f"{_interval(column('spearman'))} |")
  return "\n".join(lines)


def figure(result: Result, path: str, seed: int | None = None) -> str | None:
  """For one seed (the first by default) of each learning rate, against
  the step: lambda_1 over 2/eta, the share r of the loss gradient along u,
  and cos(grad lambda_1, g_perp) beside cos(grad lambda_1, g) (None
  without matplotlib)."""
  plt = plotting.pyplot()
  if plt is None:
    return None
  seed = result.settings.seeds[0] if seed is None else seed
  fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
  for i, r in enumerate(x for x in result.runs if x["seed"] == seed):
    s, color = r["series"], f"C{i}"
    label = f"η = {r['learning_rate']:g}"
    axes[0].plot(s["steps"], [v / r["threshold"] for v in s["lambda_1"]], color=color,
                 label=label)
    axes[1].plot(s["steps"], s["share_along_u"], color=color, label=label)
    axes[2].plot(s["steps"], s["cosine_without_u"], color=color, label=f"{label}: g⊥")
    axes[2].plot(s["steps"], s["cosine"], color=color, alpha=0.35, linewidth=0.8,
                 label=f"{label}: g")
  axes[0].axhline(1.0, color="k", linestyle="--", linewidth=1)
  axes[0].set_ylabel("λ1 / (2/η)")
  axes[1].set_ylabel("(uᵀg)² / ‖g‖²")
  axes[1].set_yscale("log")
  axes[2].axhline(0.0, color="k", linewidth=0.5)
  axes[2].set_ylabel("cos(∇λ1, ·)")
  axes[2].set_xlabel(f"step (seed {seed})")
  for ax in axes:
    ax.axvline(result.settings.from_step, color="grey", linestyle=":", linewidth=1)
  axes[0].legend()
  axes[2].legend(fontsize=8, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
