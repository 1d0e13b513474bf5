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

from tf_sharpness import training


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


def is_result(data) -> bool:
  """Is ``data`` the driver's walk.json (a list of ``summarize`` rows)?"""
  keys = {"learning_rate", "steps", "interior_minimum_fraction", "mean_grad_cosine"}
  return isinstance(data, list) and bool(data) and all(
      isinstance(r, dict) and keys <= r.keys() for r in data)


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
