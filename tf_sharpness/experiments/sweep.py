"""Sharpness along the SGD trajectory vs learning rate and batch size
(Jastrzebski et al. 2019, Fig. 1), with seeds.

Two sweeps of plain SGD, every setting run once per seed (the seed sets the
initialization and the data order):

* learning rate eta in ``learning_rates`` at batch size ``lr_sweep_batch``
  for ``lr_epochs`` epochs (one value for all, or one per learning rate),
  measured every ``measure_every_epochs`` epochs;
* batch size B in ``batch_sizes`` at learning rate ``batch_sweep_lr``, all
  for ``batch_sweep_steps`` optimizer steps (compared at equal steps),
  measured ``measurements`` times.

Each measurement is the top-k Hessian eigenvalues (Lanczos on the Hessian
subset) and the training loss.  Per setting, over the seeds as
(mean, std): the peak of lambda_max and its epoch, the mean over the last
quarter, lambda_max where the training loss first falls to or below
``loss_threshold`` (``trajectory.summarize``) and, with ``loss_levels``
L_1 > ... > L_m, lambda_max at each level and in each band
L_{k+1} < L <= L_k (``trajectory.by_loss``).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from tf_sharpness import reuse, training
from tf_sharpness.config import check_fields, like, seeds_setting, setting, settings_json
from tf_sharpness.experiments import seeds as seeds_lib
from tf_sharpness.reports import plotting, tables, trajectory

log = logging.getLogger("tf_sharpness")

SWEEP_KEYS = ("peak_lambda_max", "peak_epoch", "late_mean_lambda_max",
              "lambda_max_at_loss_threshold", "step_at_loss_threshold",
              "final_train_loss", "test_accuracy")


@dataclasses.dataclass(frozen=True)
class Setting:
  """One setting of a sweep, run once per seed."""
  sweep: str          # "learning rate" or "batch size"
  name: str           # e.g. lr0.01_b128: its runs' folders are OUT/<name>_seed<seed>
  learning_rate: float
  batch_size: int
  steps: int
  every: int          # steps between measurements


@dataclasses.dataclass(frozen=True)
class Settings:
  """The learning-rate sweep and the batch-size sweep, every setting once
  per seed."""
  dataset: str = like("dataset")
  train_order: str = like("train_order")
  model: str = like("model")
  train_size: int = like("train_size", 10000, minimum=10)
  eval_size: int = like("eval_size")
  hessian_fraction: float = like("hessian_fraction", 0.025)
  seeds: tuple = seeds_setting((0,), "Seeds; every setting runs once per seed.")
  learning_rates: tuple = setting((0.1, 0.01, 0.001), "Learning rates of the first sweep.",
                                  items=float)
  lr_sweep_batch: int = setting(128, "Batch size of the learning-rate sweep.", minimum=1)
  lr_epochs: tuple = setting((20.0,), "Epochs of the learning-rate sweep: one value, or one "
                             "per learning rate.", items=float)
  batch_sizes: tuple = setting((128, 1024), "Batch sizes of the second sweep.", items=int)
  batch_sweep_lr: float = setting(0.05, "Learning rate of the batch-size sweep.")
  batch_sweep_steps: int = setting(1560, "Optimizer steps of every batch-size run (equal "
                                   "steps).", minimum=1)
  measure_every_epochs: float = setting(1.0, "Epochs between measurements of the "
                                        "learning-rate runs.", minimum=0)
  measurements: int = setting(20, "Measurements per batch-size run (plus the end).",
                              minimum=1)
  loss_threshold: float = setting(1.0, "Training loss at which the runs are also compared.")
  loss_levels: tuple = setting((), "Training losses, decreasing, at which the runs are also "
                               "compared (lambda_max at each level and averaged over the band "
                               "between levels); empty: only --loss_threshold.", items=float)
  top_k: int = like("spectrum_k", 1, help="Eigenvalues per measurement.")
  out: str = setting("runs/sharpness_vs_lr_batch", "Output folder.")

  def __post_init__(self):
    check_fields(self)
    if len(self.lr_epochs) not in (1, len(self.learning_rates)):
      raise ValueError("`lr_epochs` needs one value or one per `learning_rates`")
    levels = self.loss_levels
    if any(b >= a for a, b in zip(levels, levels[1:])):
      raise ValueError(f"`loss_levels` must decrease strictly, got {list(levels)}")
    for b in (self.lr_sweep_batch, *self.batch_sizes):
      if self.train_size // b < 1:
        raise ValueError(f"`train_size={self.train_size}` is smaller than batch size {b}")

  def settings(self) -> list[Setting]:
    """Every setting: the learning-rate sweep, then the batch-size sweep."""
    out = []
    for i, lr in enumerate(self.learning_rates):
      b = self.lr_sweep_batch
      per_epoch = self.train_size // b
      epochs = self.lr_epochs[i if len(self.lr_epochs) > 1 else 0]
      out.append(Setting("learning rate", f"lr{float(lr):g}_b{b}", float(lr), b,
                         max(1, round(epochs * per_epoch)),
                         max(1, round(self.measure_every_epochs * per_epoch))))
    for b in self.batch_sizes:
      out.append(Setting("batch size", f"lr{self.batch_sweep_lr:g}_b{b}", self.batch_sweep_lr,
                         int(b), self.batch_sweep_steps,
                         max(1, self.batch_sweep_steps // self.measurements)))
    return out

  def config(self, s: Setting, seed: int) -> training.Config:
    """One run of plain SGD, measured (and checkpointed) every s.every steps."""
    return training.Config(
        dataset=self.dataset, train_size=self.train_size, model=self.model,
        optimizer="sgd", learning_rate=s.learning_rate, batch_size=s.batch_size,
        steps=s.steps, spectrum_every=s.every, spectrum_k=self.top_k,
        hessian_fraction=self.hessian_fraction, eval_every=s.every,
        eval_size=self.eval_size, log_every=s.every, seed=seed, train_order=self.train_order,
        checkpoint_every=s.every, logdir=os.path.join(self.out, f"{s.name}_seed{seed}"))


def mean_std(values) -> tuple:
  """(mean, std) over seeds; (None, None) when no seed has a value (the
  sweep's JSON keeps that pair form)."""
  return tuple(seeds_lib.mean_std(values) or (None, None))


def over_seeds_by_loss(runs: list[dict], levels: list[float]) -> dict:
  """Per level and per band: mean +- std over the seeds that have a value,
  and how many do (a band's measurements are counted over all seeds)."""
  return {"levels": levels,
          "at_level": [mean_std([r["by_loss"]["at_level"][k] for r in runs])
                       for k in range(len(levels))],
          "seeds_at_level": [sum(r["by_loss"]["at_level"][k] is not None for r in runs)
                             for k in range(len(levels))],
          "band_mean": [mean_std([r["by_loss"]["band_mean"][k] for r in runs])
                        for k in range(len(levels) - 1)],
          "band_count": [sum(r["by_loss"]["band_count"][k] for r in runs)
                         for k in range(len(levels) - 1)],
          "seeds_in_band": [sum(r["by_loss"]["band_count"][k] > 0 for r in runs)
                            for k in range(len(levels) - 1)]}


def over_seeds(s: Setting, runs: list[dict], levels: list[float]) -> dict:
  """One setting's entry of the sweep's JSON: its runs (one summary per
  seed) and (mean, std) over them."""
  entry = {"sweep": s.sweep, "run": s.name, "learning_rate": s.learning_rate,
           "batch_size": s.batch_size, "steps": s.steps, "seeds": [r["seed"] for r in runs],
           "runs": runs}
  for key in SWEEP_KEYS:
    entry[key] = mean_std([r[key] for r in runs])
  if levels:
    entry["by_loss"] = over_seeds_by_loss(runs, levels)
  return entry


def run_setting(settings: Settings, s: Setting) -> dict:
  """Trains (or reuses, or continues) one setting's runs over the seeds."""
  levels = list(settings.loss_levels)
  runs = []
  for seed in settings.seeds:
    log.info("run %s seed %d: eta %g, batch %d, %d steps", s.name, seed, s.learning_rate,
             s.batch_size, s.steps)
    row = trajectory.summarize(reuse.train_or_reuse(settings.config(s, int(seed))),
                               settings.train_size // s.batch_size, settings.loss_threshold)
    if levels:
      row["by_loss"] = trajectory.by_loss(row, levels)
    runs.append({"seed": int(seed), **row})
  return over_seeds(s, runs, levels)


# ------------------------------------------------------------------- tables


def pm(ms, p=1) -> str:
  """(mean, std) as 'mean ± std' with p decimals."""
  return tables.MISSING if ms[0] is None else f"{ms[0]:.{p}f} ± {ms[1]:.{p}f}"


def table(results: list[dict], loss_threshold: float) -> str:
  lines = [f"| sweep | eta | B | steps | peak lambda_max | epoch of peak | late mean "
           f"lambda_max | lambda_max at loss {loss_threshold:g} | step reaching it | "
           "final train loss | test accuracy | runs that peaked |", "| --- " * 12 + "|"]
  for r in results:
    peaked = sum(run["peaked"] for run in r["runs"])
    lines.append(
        f"| {r['sweep']} | {r['learning_rate']:g} | {r['batch_size']} | {r['steps']} | "
        f"{pm(r['peak_lambda_max'])} | {pm(r['peak_epoch'])} | "
        f"{pm(r['late_mean_lambda_max'])} | {pm(r['lambda_max_at_loss_threshold'])} | "
        f"{pm(r['step_at_loss_threshold'], 0)} | {pm(r['final_train_loss'], 3)} | "
        f"{pm(r['test_accuracy'], 3)} | {peaked}/{len(r['runs'])} |")
  return "\n".join(lines)


def loss_table(results: list[dict], levels: list[float]) -> str:
  """lambda_max at each loss level and in each band, with the ratio to the
  first setting of the same sweep: the ratio of the means over the seeds
  that have a value in both, and in brackets the smallest and largest ratio
  of one seed's run to the same seed's run in the first setting (the seed
  sets the initialization)."""
  lines = ["| sweep | eta | B | training loss L | lambda_max at L | seeds at L | "
           "ratio of means (per seed) | band below L | lambda_max in band | "
           "measurements (seeds) | ratio of means (per seed) |", "| --- " * 11 + "|"]
  first = {}
  for r in results:
    ref = first.setdefault(r["sweep"], r)
    b = r["by_loss"]
    ratio = lambda key, k: ratio_cell(r, ref, key, k)
    for k, level in enumerate(levels):
      row = (f"| {r['sweep']} | {r['learning_rate']:g} | {r['batch_size']} | {level:g} | "
             f"{pm(b['at_level'][k])} | {b['seeds_at_level'][k]}/{len(r['runs'])} | "
             f"{ratio('at_level', k)} | ")
      if k + 1 < len(levels):
        row += (f"({levels[k + 1]:g}, {level:g}] | {pm(b['band_mean'][k])} | "
                f"{b['band_count'][k]} ({b['seeds_in_band'][k]}/{len(r['runs'])}) | "
                f"{ratio('band_mean', k)} |")
      else:
        row += "| | | |"
      lines.append(row)
  return "\n".join(lines)


def ratio_cell(setting: dict, ref: dict, key: str, k: int) -> str:
  """'ratio of means (min–max per seed) [95% interval]' of by_loss[key][k]
  against ref: the interval is that of the geometric mean of the per-seed
  ratios (``seeds.ratio_interval``), * when it excludes 1."""
  per_seed = lambda r: {run["seed"]: run["by_loss"][key][k] for run in r["runs"]}
  paired = trajectory.paired_ratio(per_seed(setting), per_seed(ref))
  if paired is None:
    return tables.MISSING
  ratio, ratios = paired
  spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
  ci = seeds_lib.ratio_interval(ratios)
  interval = ""
  if ci is not None and ci["low"] is not None:
    interval = (f" [{ci['low']:.2f}, {ci['high']:.2f}]{' *' if ci['clear'] else ''}")
  return f"{ratio:.2f}{spread}{interval}"


def band(runs: list[dict], x_key: str, y_key: str):
  """Mean, minimum and maximum at each x over the seeds measured there: a
  run that diverged stops at its last measurement, and after it the band is
  over the others (``setting_label`` says how many diverged)."""
  measured = [dict(zip(r[x_key], r[y_key])) for r in runs]
  xs = sorted(set().union(*measured))
  ys = [[m[x] for m in measured if m.get(x) is not None] for x in xs]
  keep = [i for i, y in enumerate(ys) if y]
  return (np.array([xs[i] for i in keep]), np.array([np.mean(ys[i]) for i in keep]),
          np.array([min(ys[i]) for i in keep]), np.array([max(ys[i]) for i in keep]))


# ------------------------------------------------------ its JSON, seed by seed


EXPERIMENT = "sweep"


def to_json(settings: Settings, results: list[dict]) -> dict:
  """sharpness.json: {"experiment": "sweep", "settings", "results"} (one
  result per setting, each with its runs)."""
  return {"experiment": EXPERIMENT,
          "settings": settings_json(settings),
          "results": results}


def results_of(data) -> list[dict] | None:
  """The per-setting results of a sweep's JSON (or of its older bare list
  of settings with 'run', 'learning_rate' and 'runs'), None if ``data`` is
  no sweep's JSON."""
  if isinstance(data, dict) and data.get("experiment") == EXPERIMENT:
    data = data.get("results")
  ok = isinstance(data, list) and bool(data) and all(
      isinstance(s, dict) and {"run", "learning_rate", "runs"} <= s.keys() for s in data)
  return data if ok else None


def is_result(data) -> bool:
  return results_of(data) is not None


def stored_levels(sweep: list[dict]) -> list[float] | None:
  """The loss levels the sweep's equal-loss table was made at, if all its
  settings share them."""
  stored = [s.get("by_loss", {}).get("levels") for s in sweep]
  return stored[0] if stored and stored[0] and all(l == stored[0] for l in stored) else None


_fmt = tables.fixed


def _unit(run: dict) -> str:
  return "epoch" if run.get("epochs") is not None else "step"


def at_level(run: dict, level: float) -> str:
  """'x (loss, lambda_max)' of the first measurement at loss <= level."""
  i = trajectory.by_loss(run, [level])["index_at_level"][0]
  if i is None:
    return "never"
  return (f"{trajectory.x_values(run)[i]:g} ({run['train_loss'][i]:.3f}, "
          f"{run['lambda_max'][i]:.1f})")


def seeds_table(sweep: list[dict], levels: list[float]) -> str:
  """One row per run (setting and seed): start, peak, late mean, final
  loss and accuracy, and the first measurement at or below each level."""
  lines = [tables.header(
      ["run", "eta", "B", "seed", "start", "largest lambda_max", "at", "peaked", "late mean",
       "final train loss", "test accuracy", "diverged",
       *(f"first loss <= {l:g}: at (loss, lambda_max)" for l in levels)])]
  for s in sweep:
    for r in s["runs"]:
      at = r["peak_epoch"] if r.get("peak_epoch") is not None else r["peak_step"]
      lines.append(
          f"| {s['run']} | {s['learning_rate']:g} | {s['batch_size']} | {r['seed']} | "
          f"{r['initial_lambda_max']:.1f} | {r['peak_lambda_max']:.1f} | {_unit(r)} {at:g} | "
          f"{'yes' if r['peaked'] else 'no'} | {r['late_mean_lambda_max']:.1f} | "
          f"{_fmt(r['final_train_loss'], 3)} | {_fmt(r['test_accuracy'], 3)} | "
          f"{'yes' if r.get('diverged') else 'no'} |"
          + "".join(f" {at_level(r, l)} |" for l in levels))
  return "\n".join(lines)


def bands_table(sweep: list[dict], levels: list[float]) -> str:
  """Per run, the mean lambda_max between consecutive loss levels."""
  bands = list(zip(levels, levels[1:]))
  lines = [tables.header(["run", "seed", *(f"band ({lo:g}, {hi:g}]: mean (measurements)"
                                           for hi, lo in bands)])]
  for s in sweep:
    for r in s["runs"]:
      b = trajectory.by_loss(r, levels)
      lines.append(f"| {s['run']} | {r['seed']} |" + "".join(
          f" {_fmt(m, 1)} ({n}) |" for m, n in zip(b["band_mean"], b["band_count"])))
  return "\n".join(lines)


def measurements_table(sweep: list[dict]) -> str:
  """Every measurement of every run."""
  lines = [tables.header(["run", "seed", "epoch or step", "train loss", "lambda_max"])]
  for s in sweep:
    for r in s["runs"]:
      for x, loss, top in zip(trajectory.x_values(r), r["train_loss"], r["lambda_max"]):
        lines.append(f"| {s['run']} | {r['seed']} | {_unit(r)} {x:g} | {_fmt(loss, 3)} | "
                     f"{top:.1f} |")
  return "\n".join(lines)


def windows_table(sweep: list[dict], windows: list[tuple[float, float]]) -> str:
  """``trajectory.window`` of every run over each stretch A:B."""
  lines = [tables.header(["run", "seed", "window", "measurements", "mean lambda_max",
                          "range", "above 2/eta", "slope per epoch or step",
                          "mean train loss"])]
  for s in sweep:
    limit = {"2/eta": 2 / s["learning_rate"]}
    for r in s["runs"]:
      for a, b in windows:
        w = trajectory.window(r, a, b, limit)
        lines.append(
            f"| {s['run']} | {r['seed']} | {_unit(r)}s {a:g}–{b:g} | {w['count']} | "
            f"{_fmt(w['mean'], 1)} | {tables.span(w['min'], w['max'])} | "
            f"{w['above']['2/eta']} | {tables.slope(w['slope'])} | "
            f"{_fmt(w['mean_train_loss'], 3)} |")
  return "\n".join(lines)


# ------------------------------------------------------------------- figure


def setting_label(r):
  """The legend entry of one setting: what its sweep varies, and its seeds."""
  varied = (f"η = {r['learning_rate']:g}" if r["sweep"] == "learning rate"
            else f"B = {r['batch_size']}")
  diverged = sum(bool(run.get("diverged")) for run in r["runs"])
  return f"{varied} ({len(r['runs'])} seeds" + (f"; {diverged} diverged)" if diverged else ")")


def figure(results: list[dict], path: str, loss_threshold: float = 1.0) -> str | None:
  """Per sweep, lambda_max along the runs (mean and band over seeds, 2/eta
  dashed) and against the training loss; None without matplotlib."""
  plt = plotting.pyplot()
  if plt is None:
    return None
  sweeps = list(dict.fromkeys(r["sweep"] for r in results))
  fig, axes = plt.subplots(len(sweeps), 2, figsize=(11, 4 * len(sweeps)), squeeze=False)
  for (ax, ax_loss), sweep in zip(axes, sweeps):
    for i, r in enumerate(x for x in results if x["sweep"] == sweep):
      x_key = "epochs" if sweep == "learning rate" else "steps"
      x, mean, low, high = band(r["runs"], x_key, "lambda_max")
      ax.plot(x, mean, color=f"C{i}", label=setting_label(r))
      ax.fill_between(x, low, high, color=f"C{i}", alpha=0.25)
      if sweep == "learning rate":
        ax.axhline(2 / r["learning_rate"], color=f"C{i}", linestyle="--", linewidth=1)
    ax.set_xlabel("epoch" if sweep == "learning rate" else "step")
    ax.set_ylabel("λ_max (mean; band: min to max over seeds)")
    ax.set_yscale("log")
    ax.set_title(f"{sweep} sweep" + (" (dashed: 2/η)" if sweep == "learning rate" else ""))
    ax.legend(fontsize=8)
    _at_equal_loss(ax_loss, [r for r in results if r["sweep"] == sweep], loss_threshold)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _at_equal_loss(ax, settings, loss_threshold):
  """One sweep's settings against the training loss: every measurement as a
  point and, with --loss_levels, the mean over seeds in each loss band as a
  segment."""
  for i, r in enumerate(settings):
    pts = [(l, t) for run in r["runs"]
           for l, t in zip(run["train_loss"], run["lambda_max"]) if l is not None]
    ax.scatter(*zip(*pts), s=9, color=f"C{i}", alpha=0.45, label=setting_label(r))
    if "by_loss" in r:
      levels = r["by_loss"]["levels"]
      for k, (mean, _) in enumerate(r["by_loss"]["band_mean"]):
        if mean is not None:
          ax.plot([levels[k], levels[k + 1]], [mean, mean], color=f"C{i}", linewidth=2.5,
                  label="mean over seeds in each band" if k == 0 and i == 0 else None)
  plotting.equal_loss_axis(ax, loss_threshold)
  ax.set_ylabel("λ_max")
  ax.set_yscale("log")
  ax.set_title(f"{settings[0]['sweep']} sweep at equal training loss")
  ax.legend(fontsize=8)
