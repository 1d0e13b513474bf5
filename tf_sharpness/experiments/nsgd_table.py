"""NSGD steers sharpness (Jastrzebski et al. 2019, Table 1), with seeds.

Trains the same model with SGD, with NSGD for each gamma (K = ``top_k``
directions refreshed every ``refresh_every`` steps on the Hessian subset),
with SGD at each of ``sgd_learning_rates`` (Table 1's control: plain SGD
whose smaller step also ends in sharper regions) and with SGD + SAM for
each rho, once per seed, each run until its training
loss (on ``eval_size`` training examples, measured every ``refresh_every``
steps) first reaches ``target_loss`` (or ``max_steps``).  Per optimizer it
summarizes, as [mean, std] over seeds at that point: lambda_max (also as a
ratio to SGD's from the same seed), test accuracy, steps, distance from
initialization, any sharpness measures, and for NSGD the end-to-end check
of the projection: the fraction of each step in the top-K subspace against
gamma r / sqrt(1 - r^2 + gamma^2 r^2), r the minibatch gradient's fraction
there (``probes.NSGDRefreshProbe``).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from tf_sharpness import reuse, training
from tf_sharpness.config import (check_fields, like, seeds_setting, setting,
                                 settings_from_json, settings_json)
from tf_sharpness.errors import ConfigError
from tf_sharpness.experiments.seeds import mean_std, paired_interval, ratio_interval
from tf_sharpness.reports import plotting, tables

log = logging.getLogger("tf_sharpness")

EXPERIMENT = "nsgd"  # the "experiment" key of its JSON, = the subcommand


@dataclasses.dataclass(frozen=True)
class Settings:
  """SGD, NSGD per gamma and SAM per rho, once per seed, to a target loss."""
  dataset: str = like("dataset")
  train_order: str = like("train_order")
  model: str = like("model")
  train_size: int = like("train_size", 5000, minimum=10)
  eval_size: int = like("eval_size")
  learning_rate: float = like("learning_rate", 0.01)
  batch_size: int = like("batch_size", 128, minimum=1)
  hessian_fraction: float = like("hessian_fraction")
  gammas: tuple = setting((0.01, 0.1, 5.0), "NSGD gammas (SGD is always run).", items=float,
                          item_above=0)
  sgd_learning_rates: tuple = setting(
      (), "More SGD runs at these learning rates (Table 1's control: plain SGD with a "
      "smaller step), beside SGD at --learning_rate.", items=float, item_above=0)
  sam_rhos: tuple = setting((), "SAM radii: one SGD+SAM run per rho (Foret et al. 2021).",
                            items=float, item_above=0)
  sharpness_measures: tuple = like(
      "sharpness_measures", (), prefix="Sharpness measures taken with every measurement "
      "(the table gives them at the stop). ")
  sharpness_rho: float = like("sharpness_rho")
  seeds: tuple = seeds_setting((0,), "Seeds; every optimizer runs once per seed.")
  target_loss: float = setting(1.5, "Training loss at which the runs are compared.",
                               minimum=0)
  max_steps: int = setting(3000, "Most steps per run.", minimum=1)
  top_k: int = setting(5, "NSGD directions K.", minimum=1)
  refresh_every: int = setting(50, "Steps between direction refreshes (and measurements).",
                               minimum=1)
  out: str = setting("runs/nsgd_table", "Output folder.")

  def __post_init__(self):
    check_fields(self)

  def optimizers(self) -> list[tuple[str, dict]]:
    """(name, Config overrides), SGD first."""
    runs = [("SGD", dict(optimizer="sgd"))]
    runs += [(f"NSGD gamma={_number(g)}", dict(optimizer="nsgd", nsgd_gamma=float(g),
                                        nsgd_top_k=self.top_k)) for g in self.gammas]
    runs += [(f"SGD eta={_number(lr)}", dict(optimizer="sgd", learning_rate=float(lr)))
             for lr in self.sgd_learning_rates]
    runs += [(f"SAM rho={_number(r)}", dict(optimizer="sgd", sam_rho=float(r)))
             for r in self.sam_rhos]
    return runs

  def config(self, name: str, overrides: dict, seed: int) -> training.Config:
    """One run: a measurement (top-K, training loss, test accuracy, any
    sharpness measures) and a checkpoint every ``refresh_every`` steps."""
    every = self.refresh_every
    measures = ({"sharpness_every": every, "sharpness_measures": tuple(self.sharpness_measures),
                 "sharpness_rho": self.sharpness_rho} if self.sharpness_measures else {})
    cfg = training.Config(
        dataset=self.dataset, train_size=self.train_size, model=self.model,
        learning_rate=self.learning_rate, batch_size=self.batch_size,
        steps=self.max_steps, target_train_loss=self.target_loss,
        spectrum_every=every, spectrum_k=self.top_k,
        hessian_fraction=self.hessian_fraction, eval_every=every,
        eval_size=self.eval_size, log_every=every, checkpoint_every=every, seed=seed,
        train_order=self.train_order,
        logdir=os.path.join(self.out, name.replace(" ", "_").replace("=", "") +
                            f"_seed{seed}"), **measures)
    return dataclasses.replace(cfg, **overrides)


def _number(x: float) -> str:
  """x as short as it reads back exactly (5.0 -> 5, 0.1 -> 0.1): a run's
  name and folder."""
  short = f"{x:g}"
  return short if float(short) == x else repr(float(x))


def summarize(records: list[dict]) -> dict:
  """One run at its stop, from its metrics records.  A diverged run (NaN or
  inf loss or eigenvalues) gives only its trajectory, the step and the
  error: it has no state to compare."""
  last = records[-1]
  if last.get("diverged"):
    return {"diverged": True, "steps": last["step"], "reached": False,
            "error": last.get("error"), "trajectory": _trajectory(records)}
  trained = [r for r in records if "distance_from_init" in r]
  checks = [r["nsgd_step"] for r in records if "nsgd_step" in r]
  deviation = max((abs(c["step_fraction"] - c["predicted_step_fraction"]) /
                   max(c["predicted_step_fraction"], 1e-12) for c in checks), default=None)
  mean_of = lambda key: float(np.mean([c[key] for c in checks])) if checks else None
  return {**{f"sharpness {k}": v for k, v in last.get("sharpness", {}).items()},
          "lambda_max": last["top_eigenvalues"][0], "test_accuracy": last["test_accuracy"],
          "train_loss": last["train_loss"], "steps": last["step"],
          "reached": bool(last.get("target_reached")),
          "distance_from_init": trained[-1]["distance_from_init"],
          "diverged": bool(last.get("diverged")),
          "step_fraction": mean_of("step_fraction"),
          "gradient_fraction": mean_of("gradient_fraction"),
          "projection_check_max_rel_deviation": deviation, "trajectory": _trajectory(records)}


def _trajectory(records: list[dict]) -> dict:
  """lambda_max, the training loss, test accuracy and the distance from
  initialization at every measurement (the last two as None where a
  measurement lacks them)."""
  measured = [r for r in records if "top_eigenvalues" in r and "train_loss" in r]
  return {"steps": [r["step"] for r in measured],
          "train_loss": [r["train_loss"] for r in measured],
          "lambda_max": [r["top_eigenvalues"][0] for r in measured],
          "test_accuracy": [r.get("test_accuracy") for r in measured],
          "distance_from_init": [r.get("distance_from_init") for r in measured]}


def at_loss(seed: dict, level: float | None) -> dict | None:
  """One seed's run where its training loss first reached ``level`` (its
  first measurement at or below it): steps, lambda_max, test accuracy and
  the distance from initialization; ``level`` None is the stop.  None if
  the run never got there (or diverged before)."""
  stop = None if seed.get("diverged") else {
      k: seed[k] for k in ("steps", "lambda_max", "test_accuracy", "distance_from_init")}
  if level is None:
    return stop
  t = seed["trajectory"]
  for i, loss in enumerate(t["train_loss"]):
    if loss is not None and loss <= level:
      if stop is not None and t["steps"][i] == stop["steps"]:
        return stop  # (JSON from before the trajectory kept test accuracy)
      return {"steps": t["steps"][i], "lambda_max": t["lambda_max"][i],
              "test_accuracy": (t.get("test_accuracy") or [None] * (i + 1))[i],
              "distance_from_init": (t.get("distance_from_init") or [None] * (i + 1))[i]}
  return None


def paired(result: Result, level: float | None, reference: str = "SGD") -> list[dict]:
  """Every other run beside the ``reference`` run (SGD, or e.g. the
  smaller-step control "SGD eta=0.005") from the same seed, where both
  first reached training loss ``level`` (None: at the stop): the test
  accuracy difference and the steps difference as paired 95%
  t-intervals, lambda_max and the distance from initialization as ratios
  (geometric mean and interval); see ``seeds.paired_interval``."""
  runs = {row["run"]: row for row in result.rows}
  if reference not in runs:
    raise ValueError(f"no run {reference!r} to pair with (runs: {list(runs)})")
  sgd = {s["seed"]: at_loss(s, level) for s in runs[reference]["seeds"]}
  out = []
  for row in (r for r in result.rows if r["run"] != reference):
    pairs = [(at_loss(s, level), sgd.get(s["seed"])) for s in row["seeds"]]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    diff = lambda key: [a[key] - b[key] for a, b in pairs
                        if a[key] is not None and b[key] is not None]
    ratio = lambda key: [a[key] / b[key] for a, b in pairs
                         if a[key] is not None and b[key] is not None
                         and a[key] > 0 and b[key] > 0]
    out.append({"run": row["run"], "level": level, "pairs": len(pairs),
                "test_accuracy_difference": paired_interval(diff("test_accuracy")),
                "steps_difference": paired_interval(diff("steps")),
                "lambda_max_ratio": ratio_interval(ratio("lambda_max")),
                "distance_ratio": ratio_interval(ratio("distance_from_init"))})
  return out


def sharpness_keys(seeds: list[dict]) -> list[str]:
  return sorted({k for s in seeds for k in s if k.startswith("sharpness ")})


def over_seeds(name: str, per_seed: list[dict], sgd: dict | None) -> dict:
  """One optimizer's row: [mean, std] over its seeds that did not diverge
  (``diverged`` counts the others); ``sgd`` (SGD's row) pairs lambda_max
  with SGD's from the same seed (same initialization and batches)."""
  row = {"run": name, "seeds": per_seed}
  ok = [s for s in per_seed if not s.get("diverged")]
  for key in ("lambda_max", "test_accuracy", "train_loss", "steps", "distance_from_init",
              "step_fraction", "gradient_fraction", *sharpness_keys(per_seed)):
    row[key] = mean_std([s[key] for s in ok])
  row["reached"] = sum(s["reached"] for s in ok)
  if len(ok) < len(per_seed):
    row["diverged"] = len(per_seed) - len(ok)
  ref = ({s["seed"]: s["lambda_max"] for s in sgd["seeds"] if not s.get("diverged")}
         if sgd else None)
  row["lambda_max_over_sgd"] = mean_std(
      [s["lambda_max"] / ref[s["seed"]] for s in ok if s["seed"] in ref]) if ref else None
  checks = [s["projection_check_max_rel_deviation"] for s in ok
            if s["projection_check_max_rel_deviation"] is not None]
  row["projection_check_max_rel_deviation"] = max(checks) if checks else None
  return row


@dataclasses.dataclass
class Result:
  """One row per optimizer (SGD first), each with its seeds, and the
  settings that made them.  Its JSON is {"experiment": "nsgd", "settings",
  "rows"}; a bare list of rows (docs/results/nsgd_*.json before the
  settings were kept) reads back with ``settings`` None."""
  rows: list[dict]
  settings: Settings | None = None

  def to_json(self) -> dict:
    return {"experiment": EXPERIMENT,
            "settings": None if self.settings is None else settings_json(self.settings),
            "rows": self.rows}

  @classmethod
  def from_json(cls, data) -> "Result":
    settings = None
    if isinstance(data, dict):
      if data.get("experiment") != EXPERIMENT:
        raise ValueError(f"not an NSGD table's JSON (its experiment is "
                         f"{data.get('experiment')!r}, not {EXPERIMENT!r})")
      if data.get("settings") is not None:
        settings = settings_from_json(Settings, data["settings"])
      data = data.get("rows")
    if (not isinstance(data, list) or not data or data[0].get("run") != "SGD"
        or not all("seeds" in r for r in data)):
      raise ValueError("not an NSGD table's JSON (a list of rows, SGD first, each with "
                       "'seeds')")
    return cls(data, settings)


def run(settings: Settings, on_row=None) -> Result:
  """Trains (or reuses, or continues) every run; ``on_row(row)`` is called
  as each optimizer's seeds are done.  A run that diverges is kept in its
  row as diverged (its records stay on disk) and left out of the means."""
  rows = []
  for name, overrides in settings.optimizers():
    per_seed = []
    for seed in settings.seeds:
      records = reuse.train_or_reuse(settings.config(name, overrides, int(seed)))
      if records[-1].get("diverged"):
        log.warning("run %s seed %d diverged at step %d: %s", name, seed,
                    records[-1]["step"], records[-1].get("error"))
      per_seed.append({"seed": int(seed), **summarize(records)})
    rows.append(over_seeds(name, per_seed, rows[0] if rows else None))
    if on_row is not None:
      on_row(rows[-1])
  return Result(rows, settings)


def run_adding(settings: Settings, earlier: Result | None, on_row=None,
               source: str = "") -> Result:
  """``run(settings)``, merged into ``earlier`` (the result read from
  ``source``, the `add_to` setting) when given.  Whether they can merge is
  checked before training (a ConfigError naming `add_to` otherwise), so
  the merge after it cannot fail."""
  if earlier is not None:  # refused before hours of training, not after
    try:
      if earlier.settings is None:
        raise ValueError("it has no settings to compare with")
      check_mergeable(earlier.settings, settings)
    except ValueError as e:
      raise ConfigError(f"`add_to={source}`: {e}") from None
  result = run(settings, on_row)
  return result if earlier is None else merge(earlier, result)


def check_mergeable(earlier: Settings, new: Settings) -> None:
  """Raises ValueError unless seeds run with ``new`` can join those of
  ``earlier``: every setting the same but the seeds and the output folder,
  and no seed in both (checked before training, and again by ``merge``)."""
  differ = [f.name for f in dataclasses.fields(Settings) if f.name not in ("seeds", "out")
            and getattr(earlier, f.name) != getattr(new, f.name)]
  if differ:
    raise ValueError(f"settings differ in {differ}: the seeds were not run the same way")
  both = sorted(set(earlier.seeds) & set(new.seeds))
  if both:
    raise ValueError(f"seeds {both} are in both results")


def merge(earlier: Result, new: Result) -> Result:
  """``earlier``'s seeds and ``new``'s in one result, as if trained in one
  call: the settings must be the same apart from the seeds and the output
  folder, and no seed may be in both (run folders are not kept forever:
  this adds seeds to a committed JSON without retraining the others).
  Every row is summarized again over the union of its seeds."""
  if earlier.settings is None or new.settings is None:
    raise ValueError("both results must carry their settings")
  check_mergeable(earlier.settings, new.settings)
  seeds = tuple(sorted(earlier.settings.seeds + new.settings.seeds))
  settings = dataclasses.replace(new.settings, seeds=seeds)
  new_rows = {r["run"]: r for r in new.rows}
  rows = []
  for row in earlier.rows:
    per_seed = sorted(row["seeds"] + new_rows[row["run"]]["seeds"], key=lambda s: s["seed"])
    rows.append(over_seeds(row["run"], per_seed, rows[0] if rows else None))
  return Result(rows, settings)


# ------------------------------------------------------------------- tables


def _pm(ms, p=2) -> str:
  return tables.MISSING if ms is None else f"{ms[0]:.{p}f} ± {ms[1]:.{p}f}"


def table(result: Result, target_loss: float) -> str:
  """The optimizers as mean ± std over seeds (and the sharpness measures)."""
  lines = [tables.header([
      "run", f"reached loss {target_loss:g}", "steps", "lambda_max",
      "lambda_max / SGD's (same seed)", "test accuracy", "distance from init",
      "step in top-K span", "projection check (max rel. dev.)"])]
  for r in result.rows:
    check = r["projection_check_max_rel_deviation"]
    diverged = f", {r['diverged']} diverged" if r.get("diverged") else ""
    lines.append(
        f"| {r['run']} | {r['reached']}/{len(r['seeds'])}{diverged} | {_pm(r['steps'], 0)} | "
        f"{_pm(r['lambda_max'], 1)} | {_pm(r['lambda_max_over_sgd'])} | "
        f"{_pm(r['test_accuracy'], 3)} | {_pm(r['distance_from_init'])} | "
        f"{_pm(r['step_fraction'], 3)} | {tables.MISSING if check is None else f'{check:.1e}'} |")
  keys = sharpness_keys([s for r in result.rows for s in r["seeds"]])
  if keys:  # at the stop, beside lambda_max and test accuracy
    lines += ["", tables.header(["run", "lambda_max", *keys, "test accuracy"])]
    for r in result.rows:
      cells = [tables.MISSING if r.get(k) is None else f"{r[k][0]:.3g} ± {r[k][1]:.2g}"
               for k in keys]
      lines.append(f"| {r['run']} | {_pm(r['lambda_max'], 1)} | {' | '.join(cells)} | "
                   f"{_pm(r['test_accuracy'], 3)} |")
  return "\n".join(lines)


def seeds_table(result: Result, target_loss: float, steps_per_epoch: int,
                range_from: int) -> str:
  """One line per run and seed, paired with SGD from the same seed."""
  rows = result.rows
  sgd = {s["seed"]: s for s in rows[0]["seeds"]}
  lines = [tables.header(
      ["run", "seed", f"reached loss {target_loss:g}", "steps", "epochs", "lambda_max",
       "/ SGD's", "test accuracy", "- SGD's", "distance from init", "gradient fraction r",
       f"lambda_max from step {range_from}"])]
  for r in rows:
    for s in r["seeds"]:
      t = s["trajectory"]
      late = [v for step, v in zip(t["steps"], t["lambda_max"]) if step >= range_from]
      if s.get("diverged"):
        cells = [tables.MISSING] * 6
        lines.append(f"| {r['run']} | {s['seed']} | diverged | {s['steps']} | "
                     f"{s['steps'] / steps_per_epoch:.1f} | {' | '.join(cells)} | "
                     f"{tables.span(min(late, default=None), max(late, default=None))} |")
        continue
      ref = None if r is rows[0] else sgd.get(s["seed"])
      if ref is not None and ref.get("diverged"):
        ref = None
      ratio = tables.MISSING if ref is None else f"{s['lambda_max'] / ref['lambda_max']:.2f}"
      diff = (tables.MISSING if ref is None
              else f"{s['test_accuracy'] - ref['test_accuracy']:+.4f}")
      lines.append(
          f"| {r['run']} | {s['seed']} | {'yes' if s['reached'] else 'no'} | {s['steps']} | "
          f"{s['steps'] / steps_per_epoch:.1f} | {s['lambda_max']:.1f} | {ratio} | "
          f"{s['test_accuracy']:.4f} | {diff} | {s['distance_from_init']:.2f} | "
          f"{tables.fixed(s['gradient_fraction'], 2)} | "
          f"{tables.span(min(late, default=None), max(late, default=None))} |")
  return "\n".join(lines)


def seed_sharpness_table(result: Result) -> str:
  """The sharpness measures at the stop, one line per run and seed ("" if
  none was measured)."""
  keys = sharpness_keys([s for r in result.rows for s in r["seeds"]])
  if not keys:
    return ""
  lines = [tables.header(["run", "seed", "lambda_max", *keys, "test accuracy"])]
  for r in result.rows:
    for s in (s for s in r["seeds"] if not s.get("diverged")):
      cells = [tables.MISSING if s.get(k) is None else f"{s[k]:.4g}" for k in keys]
      lines.append(f"| {r['run']} | {s['seed']} | {s['lambda_max']:.1f} | "
                   f"{' | '.join(cells)} | {s['test_accuracy']:.4f} |")
  return "\n".join(lines)


def _interval(ci: dict | None, scale: float = 1.0, digits: int = 2, sign: str = "") -> str:
  """mean [low, high] (k/n above 0, or above 1 for a ratio), * when the
  interval excludes 0 (1 for a ratio)."""
  if ci is None:
    return tables.MISSING
  f = lambda v: tables.MISSING if v is None else f"{v * scale:{sign}.{digits}f}"
  star = " *" if ci["clear"] else ""
  return f"{f(ci['mean'])} [{f(ci['low'])}, {f(ci['high'])}] ({ci['positive']}/{ci['n']}){star}"


def paired_table(result: Result, levels: list[float | None], reference: str = "SGD") -> str:
  """The paired comparisons with the ``reference`` run at each
  training-loss level (None: at the stop).  Test accuracy differences are
  in points (percent)."""
  ref = "SGD's" if reference == "SGD" else f"{reference}'s"
  lines = [tables.header(
      ["run", "where", "pairs", f"test accuracy - {ref} (points)", f"lambda_max / {ref}",
       f"steps - {ref}", f"distance from init / {ref}"])]
  for level in levels:
    where = "at the stop" if level is None else f"first at loss {level:g}"
    for p in paired(result, level, reference):
      lines.append(
          f"| {p['run']} | {where} | {p['pairs']} | "
          f"{_interval(p['test_accuracy_difference'], 100, 2, '+')} | "
          f"{_interval(p['lambda_max_ratio'])} | "
          f"{_interval(p['steps_difference'], 1, 0, '+')} | "
          f"{_interval(p['distance_ratio'])} |")
  return "\n".join(lines) + (
      "\n\n(mean [95% paired t-interval over seeds] (pairs above 0, or above 1 for a "
      "ratio, of all pairs); ratios are geometric means (of positive values); * the "
      "interval excludes 0, or 1 for a ratio: an effect larger than its uncertainty; a "
      "zero-width interval means every pair differed alike)")


def report(result: Result, settings: Settings, loss_levels=(), references=("SGD",),
           range_from: int = 0) -> str:
  """Every table of ``result``: over seeds, seed by seed (lambda_max's
  range from step ``range_from`` on), paired with each of ``references`` at
  ``settings.target_loss`` and each of ``loss_levels``, and the sharpness
  measures per seed (if any).  ``settings`` gives the target loss and the
  steps per epoch (training's whole steps).  A ValueError names a reference
  that is no run."""
  levels = sorted(set(loss_levels) | {settings.target_loss}, reverse=True)
  parts = [table(result, settings.target_loss),
           seeds_table(result, settings.target_loss,
                       settings.train_size // settings.batch_size, range_from)]
  parts += [paired_table(result, levels, reference) for reference in references]
  per_seed = seed_sharpness_table(result)
  return "\n\n".join(parts + ([per_seed] if per_seed else []))


def figure(result: Result, path: str, target_loss: float) -> str | None:
  """lambda_max against step and against training loss, one line per seed,
  saved to ``path`` (None without matplotlib)."""
  rows = result.rows
  plt = plotting.pyplot()
  if plt is None:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for i, row in enumerate(rows):
    for j, seed in enumerate(row["seeds"]):
      t = seed["trajectory"]
      label = f"{row['run']} ({len(row['seeds'])} seeds)" if j == 0 else None
      axes[0].plot(t["steps"], t["lambda_max"], color=f"C{i}", alpha=0.8, label=label)
      axes[1].plot(t["train_loss"], t["lambda_max"], color=f"C{i}", alpha=0.8, label=label)
      axes[1].plot(t["train_loss"][-1:], t["lambda_max"][-1:], "o", color=f"C{i}")
  axes[0].set_xlabel("step")
  axes[0].set_title("λ_max along training")
  plotting.equal_loss_axis(axes[1], target_loss)
  axes[1].set_title(f"at equal training loss ({target_loss:g}, dotted)")
  for ax in axes:
    ax.set_ylabel("λ_max")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
