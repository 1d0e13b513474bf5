"""Is the SGD step too large along the sharpest direction?  (Jastrzebski et
al. 2019.)

Trains a model with SGD once per (learning rate, seed) and, every
``every`` steps, takes the top Hessian eigenvector e1 on the Hessian subset
and ``minibatches`` fresh training minibatches of the training batch size.
On each minibatch b with gradient g_b and e1 component s_b = eta g_b^T e1
(``landscape.component_scaling``):

* the loss change of the SGD step with its e1 component scaled by
  alpha in {0, 0.5, 1, 2} (0: e1 removed, 1: the SGD step, 2: doubled), and
  of the e1 component alone scaled by alpha (e1 kept only);
* t* = argmin_t L_b(theta - t s_b e1): the step *overshoots* the minimum
  along e1 when t* < 1 (on a quadratic t* = 1 / (eta lambda_1)), and the e1
  part of the step *raises* the loss when L_b(theta - s_b e1) > L_b(theta)
  (eta lambda_1 > 2 on a quadratic).

The claim: during most of training the full step overshoots along e1.  A
measurement counts as overshooting when most of its minibatches do.
"""

from __future__ import annotations

import dataclasses
import os
import numpy as np

from tf_sharpness import reuse, training
from tf_sharpness.config import check_fields, like, seeds_setting, setting, settings_json
from tf_sharpness.experiments.seeds import mean_std
from tf_sharpness.reports import tables

ALPHAS = (0.0, 0.5, 1.0, 2.0)
LINE_END = 2.0  # the line t in [0, 2] of landscape.component_scaling


@dataclasses.dataclass(frozen=True)
class Settings:
  """One experiment: SGD at each learning rate, once per seed."""
  dataset: str = like("dataset")
  train_order: str = like("train_order")
  model: str = like("model")
  train_size: int = like("train_size", 10000, minimum=1)
  learning_rates: tuple = setting((0.01,), "SGD learning rates.", items=float, item_above=0,
                                  nonempty=True, distinct=True)
  batch_size: int = like("batch_size", 128, minimum=1,
                         help="Batch size of training and of the measured minibatches.")
  steps: int = like("steps", 1560)
  every: int = setting(78, "Steps between measurements (78 = one epoch of 10,000 at 128).",
                       minimum=1)
  minibatches: int = setting(10, "Minibatches per measurement.", minimum=1)
  hessian_fraction: float = like("hessian_fraction", 0.025,
                                 help="Fraction of the training set for e1.")
  eval_size: int = like("eval_size", 2000, help="Training examples of the training loss.")
  seeds: tuple = seeds_setting((0, 1, 2), "Seeds: one run per learning rate and seed.")
  out: str = setting("runs/step_length", "Folder of the runs.")

  def __post_init__(self):
    check_fields(self)
    if not 0 < self.hessian_fraction <= 1:
      raise ValueError(f"`hessian_fraction` must be in (0, 1], got {self.hessian_fraction}")

  def config(self, learning_rate: float, seed: int) -> training.Config:
    """The run of one (learning rate, seed): e1 only (k = 1), the step
    analysis at factors 0.5, 1, 2 and the e1 scaling every ``every`` steps."""
    return training.Config(
        dataset=self.dataset, model=self.model, train_size=self.train_size,
        optimizer="sgd", learning_rate=learning_rate, batch_size=self.batch_size,
        steps=self.steps, spectrum_every=self.every, spectrum_k=1,
        hessian_fraction=self.hessian_fraction, step_analysis_every=self.every,
        slice_directions=(1,), step_factors=(0.5, 1.0, 2.0),
        landscape_minibatches=self.minibatches, eval_every=self.every,
        eval_size=self.eval_size, log_every=self.every, checkpoint_every=self.every,
        seed=seed, train_order=self.train_order,
        logdir=os.path.join(self.out, f"lr{learning_rate:g}_seed{seed}"))


@dataclasses.dataclass
class Run:
  """One run's measurements, in step order."""
  learning_rate: float
  seed: int
  steps: list[int]
  train_loss: list[float]
  lambda_max: list[float]
  overshoot_fraction: list[float]
  increase_fraction: list[float]
  line_minimum_median: list[float]
  full_step: list[list[float]]       # [measurement][alpha]
  component_only: list[list[float]]  # [measurement][alpha]
  test_accuracy: float | None = None

  @classmethod
  def from_records(cls, records: list[dict], learning_rate: float, seed: int) -> "Run":
    measured = [r for r in records if "step_e1_scaling" in r]
    if not measured:
      raise ValueError(f"run lr={learning_rate:g} seed={seed} has no e1 step measurement")
    e1 = [r["step_e1_scaling"] for r in measured]
    nan = lambda values: [float("nan") if v is None else v for v in values]
    return cls(
        learning_rate=learning_rate, seed=seed, steps=[r["step"] for r in measured],
        train_loss=[r.get("train_loss") for r in measured],
        lambda_max=[r["top_eigenvalues"][0] for r in measured],
        overshoot_fraction=nan([m["overshoot_fraction"] for m in e1]),
        increase_fraction=[m["increase_fraction"] for m in e1],
        line_minimum_median=[float(np.nanmedian(nan(m["line_minimum"]))) for m in e1],
        full_step=[m["full_step"] for m in e1],
        component_only=[m["component_only"] for m in e1],
        test_accuracy=records[-1].get("test_accuracy"))

  def summary(self) -> dict:
    """Means over the run's measurements."""
    over = np.asarray(self.overshoot_fraction)
    return {
        "measurements": len(self.steps),
        "eta_lambda_max": float(np.mean(self.learning_rate * np.asarray(self.lambda_max))),
        "overshoot_fraction": float(np.nanmean(over)),
        "measurements_overshooting": float(np.mean(over[np.isfinite(over)] > 0.5)),
        "increase_fraction": float(np.mean(self.increase_fraction)),
        "line_minimum_median": float(np.nanmedian(self.line_minimum_median)),
        # the quadratic model's t* = 1 / (eta lambda_max), capped at the line's end
        "predicted_line_minimum_median": float(np.median(np.minimum(
            1.0 / (self.learning_rate * np.asarray(self.lambda_max)), LINE_END))),
        "full_step": np.mean(self.full_step, axis=0).tolist(),
        "component_only": np.mean(self.component_only, axis=0).tolist(),
        "test_accuracy": self.test_accuracy}


@dataclasses.dataclass
class Result:
  settings: dict
  runs: list[Run]

  def to_json(self) -> dict:
    return {"experiment": "step_length", "settings": self.settings,
            "runs": [dataclasses.asdict(r) for r in self.runs]}

  @classmethod
  def from_json(cls, data: dict) -> "Result":
    if not isinstance(data, dict) or data.get("experiment") != "step_length":
      raise ValueError("not a step-length experiment's JSON (no \"experiment\": "
                       "\"step_length\")")
    return cls(data["settings"], [Run(**r) for r in data["runs"]])


def run(settings: Settings) -> Result:
  """Trains (or reuses, or continues) every run of ``settings``."""
  runs = []
  for lr in settings.learning_rates:
    for seed in settings.seeds:
      records = reuse.train_or_reuse(settings.config(float(lr), int(seed)))
      if records[-1].get("diverged"):
        raise training.Diverged(f"lr={lr:g} seed={seed} diverged at step "
                                f"{records[-1]['step']}")
      runs.append(Run.from_records(records, float(lr), int(seed)))
  return Result(settings_json(settings), runs)


_COLUMNS = ("eta", "seed", "measurements", "eta lambda_max",
            "minibatches overshooting along e1", "measurements overshooting",
            "e1 part raises the loss", "median t* (1 / (eta lambda_max))",
            "loss change %: e1 removed / x0.5 / SGD step / x2",
            "e1 only: x0.5 / x1 / x2", "test accuracy")


def table(result: Result) -> str:
  """Per run, then mean ± std over seeds per learning rate (Markdown)."""
  lines = [tables.header(_COLUMNS)]
  pct = lambda v: f"{100 * v:.0f}%"
  changes = lambda v: " / ".join(f"{c:+.2f}" for c in v)
  for lr in sorted({r.learning_rate for r in result.runs}, reverse=True):
    runs = [r for r in result.runs if r.learning_rate == lr]
    summaries = [r.summary() for r in runs]
    for r, s in zip(runs, summaries):
      lines.append("| " + " | ".join([
          f"{lr:g}", str(r.seed), str(s["measurements"]), f"{s['eta_lambda_max']:.2f}",
          pct(s["overshoot_fraction"]), pct(s["measurements_overshooting"]),
          pct(s["increase_fraction"]),
          f"{s['line_minimum_median']:.2f} ({s['predicted_line_minimum_median']:.2f})",
          changes(s["full_step"]), changes(s["component_only"][1:]),
          tables.fixed(s["test_accuracy"], 3)]) + " |")
    ms = lambda key, fmt: _pm([s[key] for s in summaries], fmt)
    lines.append("| " + " | ".join([
        f"**{lr:g}**", "mean ± std", "", ms("eta_lambda_max", "{:.2f}"),
        ms("overshoot_fraction", "{:.0%}"), ms("measurements_overshooting", "{:.0%}"),
        ms("increase_fraction", "{:.0%}"),
        f'{ms("line_minimum_median", "{:.2f}")} ({ms("predicted_line_minimum_median", "{:.2f}")})',
        " / ".join(_pm([s["full_step"][j] for s in summaries], "{:+.2f}")
                   for j in range(len(ALPHAS))),
        " / ".join(_pm([s["component_only"][j] for s in summaries], "{:+.2f}")
                   for j in range(1, len(ALPHAS))),
        ms("test_accuracy", "{:.3f}")]) + " |")
  return "\n".join(lines)


def _pm(values, fmt: str) -> str:
  m = mean_std(values)
  if m is None:
    return tables.MISSING
  return f"{fmt.format(m[0])} ± {fmt.format(m[1]).lstrip('+')}"


def trajectory_table(result: Result) -> str:
  """Per measurement step, over seeds: eta lambda_max, the share of
  minibatches overshooting along e1, the median t*, and the loss change of
  the SGD step with e1 removed, halved and kept (means over seeds)."""
  lines = [tables.header(("eta", "step", "train loss", "eta lambda_max",
                          "overshooting", "e1 part raises the loss", "median t*",
                          "SGD step, e1 removed / halved / kept (%)"))]
  for lr in sorted({r.learning_rate for r in result.runs}, reverse=True):
    runs = [r for r in result.runs if r.learning_rate == lr]
    steps = sorted(set.intersection(*(set(r.steps) for r in runs)))
    for step in steps:
      at = [r.steps.index(step) for r in runs]
      mean = lambda xs: float(np.mean([x for x in xs if x is not None])) if any(
          x is not None for x in xs) else None
      loss = mean([r.train_loss[i] for r, i in zip(runs, at)])
      lines.append("| " + " | ".join([
          f"{lr:g}", str(step), tables.significant(loss),
          f"{mean([lr * r.lambda_max[i] for r, i in zip(runs, at)]):.2f}",
          f"{mean([r.overshoot_fraction[i] for r, i in zip(runs, at)]):.0%}",
          f"{mean([r.increase_fraction[i] for r, i in zip(runs, at)]):.0%}",
          f"{mean([r.line_minimum_median[i] for r, i in zip(runs, at)]):.2f}",
          " / ".join(f"{mean([r.full_step[i][j] for r, i in zip(runs, at)]):+.2f}"
                     for j in range(3))]) + " |")
  return "\n".join(lines)
