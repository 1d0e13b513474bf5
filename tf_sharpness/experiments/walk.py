"""A walk with SGD (Xing et al. 2018): how often does an SGD step cross a
valley floor, and how do the learning rate and the batch size change it?

SGD at every learning rate x batch size x seed; over each window of steps
(``walk_steps``: an early and a late one, say) the loss on a fixed slice of
the training set is interpolated between consecutive iterates
theta_t -> theta_{t+1} (``probes`` "walk" records).  One row per run and
window: the fraction of steps whose curve has an interior minimum (the step
crosses the valley floor), the mean position of that minimum, the fraction
of convex curves, the mean cosine between consecutive minibatch gradients,
the mean height above the floor, L(theta_t) - min_a L((1-a) theta_t +
a theta_{t+1}), and the distance from the initialization after the
window's first and last steps.  Over seeds: mean +- std per (eta, B, window), and every
factor's effect as a paired difference with its 95% t-interval (same seed:
same initialization and batch order)."""

from __future__ import annotations

import dataclasses
import itertools
import os

import numpy as np

from tf_sharpness import reuse, training
from tf_sharpness.config import check_fields, like, seeds_setting, setting, settings_json
from tf_sharpness.errors import ConfigError
from tf_sharpness.experiments.seeds import mean_std, paired_interval
from tf_sharpness.reports import tables

EXPERIMENT = "walk"
# A run's summary of one window, in table order.
QUANTITIES = ("interior_minimum_fraction", "mean_valley_position", "convex_fraction",
              "mean_grad_cosine", "mean_height", "distance_start", "distance_end")


@dataclasses.dataclass(frozen=True)
class Settings:
  """SGD at each learning rate x batch size x seed; the steps of every
  window of ``walk_steps`` interpolated."""
  dataset: str = like("dataset")
  train_order: str = like("train_order")
  model: str = like("model")
  train_size: int = like("train_size", 5000, minimum=10)
  learning_rates: tuple = setting((0.01, 0.1), "SGD learning rates.", items=float,
                                  item_above=0, nonempty=True, distinct=True)
  batch_sizes: tuple = setting((128,), "Batch sizes (every one at every learning rate).",
                               items=int, item_minimum=1, nonempty=True, distinct=True)
  seeds: tuple = seeds_setting((0,), "Seeds; every learning rate x batch size runs once "
                               "per seed.")
  walk_steps: str = like("walk_steps", "100:200")
  walk_points: int = like("walk_points", minimum=3)
  landscape_size: int = like("landscape_size")
  out: str = setting("runs/walk", "Output folder.")

  def __post_init__(self):
    check_fields(self)
    if not self.windows().ranges:
      raise ConfigError("`walk_steps` must name at least one START:END window")

  def windows(self):
    return training.Config(walk_steps=self.walk_steps).walk_window()  # or a ConfigError

  def cells(self):
    """(learning rate, batch size, seed) of every run, in run order."""
    return list(itertools.product(self.learning_rates, self.batch_sizes, self.seeds))

  def config(self, learning_rate: float, batch_size: int, seed: int) -> training.Config:
    """SGD up to the last window's end, interpolating every window's steps,
    logging to OUT/lr<eta>_b<B>_seed<seed>."""
    cfg = training.Config(
        logdir=os.path.join(self.out, f"lr{learning_rate:g}_b{batch_size}_seed{seed}"),
        dataset=self.dataset, train_size=self.train_size, model=self.model,
        learning_rate=learning_rate, batch_size=batch_size, seed=seed,
        train_order=self.train_order,
        spectrum_every=0, eval_every=0, log_every=50, checkpoint_every=50,
        walk_steps=self.walk_steps, walk_points=self.walk_points,
        landscape_size=self.landscape_size)
    return dataclasses.replace(cfg, steps=cfg.walk_window().stop)


def run(settings: Settings, on_row=None) -> list[dict]:
  """Every run trained (or reused) and summarized, one row per run and
  window (a diverged run's rows say so; a window it did not reach is NaN);
  ``on_row(row)`` as each is done."""
  rows = []
  windows = settings.windows().ranges
  for lr, batch, seed in settings.cells():
    records = reuse.train_or_reuse(settings.config(lr, batch, seed))
    diverged = bool(records and records[-1].get("diverged"))
    for window in windows:
      rows.append({"learning_rate": lr, "batch_size": batch, "seed": seed,
                   **summarize(records, window), **({"diverged": True} if diverged else {})})
      if on_row is not None:
        on_row(rows[-1])
  return rows


def summarize(records: list[dict], window: range) -> dict:
  """The walk records of one window summarized (NaN if it has none, e.g.
  the run diverged before it)."""
  walks = [(r["step"], r["walk"], r.get("distance_from_init")) for r in records
           if "walk" in r and r["step"] in window]
  out = {"window": f"{window.start}:{window.stop}", "steps": len(walks)}
  if not walks:
    return {**out, **{k: float("nan") for k in QUANTITIES}}
  w = [walk for _, walk, _ in walks]
  cosines = [x["grad_cosine"] for x in w if x["grad_cosine"] is not None]
  distances = [d for _, _, d in walks if d is not None]
  nan = float("nan")
  return {**out,
          "interior_minimum_fraction": float(np.mean([x["interior_minimum"] for x in w])),
          "mean_valley_position": float(np.mean([x["argmin"] for x in w])),
          "convex_fraction": float(np.mean([x["convex"] for x in w])),
          "mean_grad_cosine": float(np.mean(cosines)) if cosines else nan,
          "mean_height": float(np.mean([x["losses"][0] - x["min_loss"] for x in w])),
          "distance_start": float(distances[0]) if distances else nan,
          "distance_end": float(distances[-1]) if distances else nan}


def to_json(settings: Settings, rows: list[dict]) -> dict:
  """walk.json: {"experiment": "walk", "settings", "rows"}."""
  return {"experiment": EXPERIMENT, "settings": settings_json(settings), "rows": rows}


def rows_of(data) -> list[dict] | None:
  """The rows of a walk.json (or of its older bare list, one seed and one
  window per learning rate), None if ``data`` is no walk.json."""
  if isinstance(data, dict) and data.get("experiment") == EXPERIMENT:
    data = data.get("rows")
  keys = {"learning_rate", "steps", "interior_minimum_fraction", "mean_grad_cosine"}
  ok = isinstance(data, list) and bool(data) and all(
      isinstance(r, dict) and keys <= r.keys() for r in data)
  return data if ok else None


def is_result(data) -> bool:
  return rows_of(data) is not None


def _pct(v) -> str:
  return tables.MISSING if v is None or v != v else f"{100 * v:.1f}%"


def _num(v, p=2) -> str:
  return tables.MISSING if v is None or v != v else f"{v:.{p}f}"


def _distance(r: dict) -> str:
  start, end = r.get("distance_start"), r.get("distance_end")
  return tables.MISSING if start is None else f"{_num(start)}–{_num(end)}"


def table(rows: list[dict]) -> str:
  """One line per run and window."""
  get = lambda r, k: tables.MISSING if r.get(k) is None else str(r[k])
  lines = [tables.header(["eta", "batch", "seed", "window", "steps",
                          "steps crossing a valley floor", "mean position of the minimum",
                          "convex curves", "mean cos(g_{t-1}, g_t)", "height above the floor",
                          "distance from init"])]
  for r in rows:
    lines.append(
        f"| {r['learning_rate']:g} | {get(r, 'batch_size')} | {get(r, 'seed')} | "
        f"{get(r, 'window')} | {r['steps']} | {_pct(r['interior_minimum_fraction'])} | "
        f"{_num(r['mean_valley_position'])} | {_pct(r['convex_fraction'])} | "
        f"{_num(r['mean_grad_cosine'])} | {_num(r.get('mean_height'), 4)} | "
        f"{_distance(r)} |")
  return "\n".join(lines)


def _groups(rows: list[dict]) -> dict:
  """{(eta, B, window): {seed: row}} in first-seen order."""
  groups: dict = {}
  for r in rows:
    key = (r["learning_rate"], r.get("batch_size"), r.get("window"))
    groups.setdefault(key, {})[r.get("seed")] = r
  return groups


def seeds_table(rows: list[dict]) -> str:
  """Mean ± std over seeds per learning rate, batch size and window."""
  lines = [tables.header(["eta", "batch", "window", "seeds", "steps crossing a valley floor",
                          "mean cos(g_{t-1}, g_t)", "height above the floor",
                          "distance from init at the end"])]
  for (lr, batch, window), by_seed in _groups(rows).items():
    ms = lambda k: mean_std(v for v in (r.get(k) for r in by_seed.values())
                            if v is not None and v == v)
    pm = lambda k, f, p, unit="": tables.MISSING if ms(k) is None else (
        f"{f * ms(k)[0]:.{p}f} ± {f * ms(k)[1]:.{p}f}{unit}")
    lines.append(f"| {lr:g} | {batch} | {window} | {len(by_seed)} | "
                 f"{pm('interior_minimum_fraction', 100, 1, '%')} | {pm('mean_grad_cosine', 1, 2)} | "
                 f"{pm('mean_height', 1, 4)} | {pm('distance_end', 1, 2)} |")
  return "\n".join(lines)


def effects(rows: list[dict]) -> list[dict]:
  """Every factor's effect at the other's fixed values, per window: the
  larger learning rate minus the smaller (each pair of learning rates, at
  each batch size) and the larger batch minus the smaller (at each
  learning rate), as paired differences over the seeds both have
  (``seeds.paired_interval``) of the crossing fraction, the gradient
  cosine and the height above the floor."""
  groups = _groups(rows)
  lrs = sorted({k[0] for k in groups})
  batches = sorted({k[1] for k in groups if k[1] is not None})
  windows = list(dict.fromkeys(k[2] for k in groups))
  out = []
  contrasts = [("eta", (lo, b), (hi, b)) for b in batches
               for lo, hi in itertools.combinations(lrs, 2)]
  contrasts += [("batch", (lr, lo), (lr, hi)) for lr in lrs
                for lo, hi in itertools.combinations(batches, 2)]
  for window in windows:
    for factor, (lr0, b0), (lr1, b1) in contrasts:
      low, high = groups.get((lr0, b0, window)), groups.get((lr1, b1, window))
      if not low or not high:
        continue
      seeds = [s for s in low if s in high]
      diff = lambda k: [high[s][k] - low[s][k] for s in seeds
                        if high[s][k] == high[s][k] and low[s][k] == low[s][k]]
      out.append({"window": window, "factor": factor,
                  "low": {"learning_rate": lr0, "batch_size": b0},
                  "high": {"learning_rate": lr1, "batch_size": b1},
                  **{k: paired_interval(diff(k)) for k in
                     ("interior_minimum_fraction", "mean_grad_cosine", "mean_height")}})
  return out


def effects_table(rows: list[dict]) -> str:
  """``effects`` as paired 95% t-intervals (* where the interval excludes 0)."""
  def cell(ci, scale=1.0, p=2):
    if ci is None:
      return tables.MISSING
    text = f"{scale * ci['mean']:+.{p}f}"
    if ci["low"] is not None:
      text += f" [{scale * ci['low']:+.{p}f}, {scale * ci['high']:+.{p}f}]"
    return text + (" *" if ci["clear"] else "") + f" ({ci['positive']}/{ci['n']} > 0)"
  lines = [tables.header(["window", "change", "at", "crossing fraction (points)",
                          "cos(g_{t-1}, g_t)", "height above the floor"])]
  for e in effects(rows):
    lo, hi = e["low"], e["high"]
    if e["factor"] == "eta":
      change = f"eta {lo['learning_rate']:g} → {hi['learning_rate']:g}"
      at = f"B = {lo['batch_size']}"
    else:
      change = f"B {lo['batch_size']} → {hi['batch_size']}"
      at = f"eta = {lo['learning_rate']:g}"
    lines.append(f"| {e['window']} | {change} | {at} | "
                 f"{cell(e['interior_minimum_fraction'], 100, 1)} | "
                 f"{cell(e['mean_grad_cosine'])} | {cell(e['mean_height'], 1, 4)} |")
  return "\n".join(lines)


def report(rows: list[dict]) -> str:
  """Per run, over seeds and the effects (the last two where there are
  batch sizes and seeds to compare)."""
  parts = [table(rows)]
  if any("seed" in r for r in rows):
    parts += [seeds_table(rows), effects_table(rows)]
  return "\n\n".join(parts)
