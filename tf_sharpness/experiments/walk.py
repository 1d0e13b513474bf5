"""A walk with SGD (Xing et al. 2018): how often does an SGD step cross a
valley floor?  SGD at each learning rate; over a window of steps the loss
(on a fixed slice of the training set) is interpolated between consecutive
iterates theta_t -> theta_{t+1} (``probes`` "walk" records).  A run's summary:
the fraction of steps whose curve has an interior minimum (the step crosses
the valley floor), the mean position of that minimum, the fraction of
convex curves and the mean cosine between consecutive gradients."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tf_sharpness import reuse, training
from tf_sharpness.config import check_fields, like, setting, settings_json
from tf_sharpness.errors import ConfigError

EXPERIMENT = "walk"


@dataclasses.dataclass(frozen=True)
class Settings:
  """SGD at each learning rate; the steps of ``walk_steps`` interpolated."""
  dataset: str = like("dataset")
  model: str = like("model")
  train_size: int = like("train_size", 5000, minimum=10)
  batch_size: int = like("batch_size", minimum=1)
  learning_rates: tuple = setting((0.01, 0.1), "SGD learning rates.", items=float)
  walk_steps: str = like("walk_steps", "100:200")
  walk_points: int = like("walk_points", minimum=3)
  landscape_size: int = like("landscape_size")
  out: str = setting("runs/walk_with_sgd", "Output folder.")

  def __post_init__(self):
    check_fields(self)
    if not self.learning_rates or min(self.learning_rates) <= 0:
      raise ConfigError(f"`learning_rates` must be positive, got {list(self.learning_rates)}")
    training.Config(walk_steps=self.walk_steps).walk_window()  # START:END, or a ConfigError

  def config(self, learning_rate: float) -> training.Config:
    return config(learning_rate, self.walk_steps, self.out, dataset=self.dataset,
                  train_size=self.train_size, model=self.model, batch_size=self.batch_size,
                  walk_points=self.walk_points, landscape_size=self.landscape_size)


def run(settings: Settings, on_row=None) -> list[dict]:
  """Every learning rate trained (or reused), summarized; ``on_row(row)``
  as each is done."""
  rows = []
  for lr in settings.learning_rates:
    rows.append(summarize(reuse.train_or_reuse(settings.config(lr)), lr))
    if on_row is not None:
      on_row(rows[-1])
  return rows


def config(learning_rate: float, window: str, out: str, **settings) -> training.Config:
  """SGD at ``learning_rate`` up to the window's end, interpolating the steps
  in ``window`` (START:END), logging to OUT/lr<eta>."""
  cfg = training.Config(
      logdir=os.path.join(out, f"lr{learning_rate:g}"), learning_rate=learning_rate,
      spectrum_every=0, eval_every=0, log_every=50, walk_steps=window,
      checkpoint_every=50, **settings)
  return dataclasses.replace(cfg, steps=cfg.walk_window().stop)


def summarize(records: list[dict], learning_rate: float) -> dict:
  """The run's walk records summarized (NaN fractions if it has none, e.g.
  diverged before the window)."""
  walks = [r["walk"] for r in records if "walk" in r]
  if not walks:
    nan = float("nan")
    return {"learning_rate": learning_rate, "steps": 0, "interior_minimum_fraction": nan,
            "mean_valley_position": nan, "convex_fraction": nan, "mean_grad_cosine": nan}
  return {"learning_rate": learning_rate, "steps": len(walks),
          "interior_minimum_fraction": float(np.mean([w["interior_minimum"] for w in walks])),
          "mean_valley_position": float(np.mean([w["argmin"] for w in walks])),
          "convex_fraction": float(np.mean([w["convex"] for w in walks])),
          "mean_grad_cosine": float(np.mean([w["grad_cosine"] for w in walks
                                             if w["grad_cosine"] is not None]))}


def to_json(settings: Settings, rows: list[dict]) -> dict:
  """walk.json: {"experiment": "walk", "settings", "rows"}."""
  return {"experiment": EXPERIMENT,
          "settings": settings_json(settings),
          "rows": rows}


def rows_of(data) -> list[dict] | None:
  """The rows of a walk.json (or of its older bare list), None if ``data``
  is no walk.json."""
  if isinstance(data, dict) and data.get("experiment") == EXPERIMENT:
    data = data.get("rows")
  keys = {"learning_rate", "steps", "interior_minimum_fraction", "mean_grad_cosine"}
  ok = isinstance(data, list) and bool(data) and all(
      isinstance(r, dict) and keys <= r.keys() for r in data)
  return data if ok else None


def is_result(data) -> bool:
  return rows_of(data) is not None


def table(rows: list[dict]) -> str:
  """One line per learning rate: the walk's fractions and the gradient
  cosine."""
  pct = lambda v: "—" if v != v else f"{100 * v:.1f}%"  # NaN: no walk records
  num = lambda v: "—" if v != v else f"{v:.2f}"
  lines = ["| eta | steps | steps crossing a valley floor | mean position of the minimum | "
           "convex curves | mean cos(g_{t-1}, g_t) |", "| --- " * 6 + "|"]
  for r in rows:
    lines.append(f"| {r['learning_rate']:g} | {r['steps']} | "
                 f"{pct(r['interior_minimum_fraction'])} | {num(r['mean_valley_position'])} | "
                 f"{pct(r['convex_fraction'])} | {num(r['mean_grad_cosine'])} |")
  return "\n".join(lines)
