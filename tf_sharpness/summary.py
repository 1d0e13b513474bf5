"""Summary ops for the TensorBoard "Spectrum" tab.

Each op writes, at ``step``, one scalar string tensor holding a JSON payload,
with metadata from ``tb_plugin.metadata`` (plugin "spectrum",
data class tensor).  Call them inside a ``tf.summary`` writer's
``as_default()`` block, like ``tf.summary.scalar``.
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from tb_plugin import metadata


def _write(kind: str, name: str, payload: dict, step: int,
           description: str = "") -> bool:
  meta = metadata.create_summary_metadata(kind, description)
  text = json.dumps(_clean(payload), allow_nan=False)
  return tf.summary.write(tag=name, tensor=tf.constant(text), step=step,
                          metadata=meta.SerializeToString())


def _clean(obj):
  """JSON-safe copy: numpy to lists, NaN/inf to None."""
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return _clean(obj.tolist())
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(float(obj)) else None
  if isinstance(obj, (np.integer,)):
    return int(obj)
  return obj


def _floats(name: str, values) -> list:
  arr = np.asarray(values, dtype=np.float64).reshape(-1)
  if arr.size == 0:
    raise ValueError(f"{name} must not be empty")
  return arr.tolist()


def eigenvalues(name: str, values: Sequence[float], step: int, *,
                residuals: Sequence[float] | None = None,
                learning_rate: float | None = None, momentum: float = 0.0,
                which: str = "largest", num_matvecs: int | None = None,
                info: dict | None = None,
                spread: Sequence[float] | None = None,
                thresholds: Sequence | None = None) -> bool:
  """Top-k eigenvalues at ``step``.

  ``thresholds``: stability lines to draw, ``stability.Threshold``s or
  ``{"label", "value"}`` dicts (e.g. ``stability.thresholds(optimizer)``);
  without them the page draws 2 (1 + momentum) / learning_rate.
  """
  payload = {"values": _floats("values", values), "which": which,
             "learning_rate": learning_rate, "momentum": momentum,
             "num_matvecs": num_matvecs, "info": info or {}}
  if thresholds is not None:
    payload["thresholds"] = _threshold_list(thresholds)
  if residuals is not None:
    payload["residuals"] = _floats("residuals", residuals)
  if spread is not None:
    payload["spread"] = _floats("spread", spread)
  return _write("eigenvalues", name, payload, step)


def density(name: str, grid: Sequence[float], density: Sequence[float],
            step: int) -> bool:
  """An SLQ spectral density on ``grid``."""
  g, d = _floats("grid", grid), _floats("density", density)
  if len(g) != len(d):
    raise ValueError(f"grid and density differ in length: {len(g)} vs {len(d)}")
  return _write("density", name, {"grid": g, "density": d}, step)


def loss_slice(name: str, alphas: Sequence[float], losses: Sequence[float],
               step: int, *, direction: str = "", scale: float | None = None,
               extra: dict | None = None) -> bool:
  """A 1-D slice L(theta + alpha * scale * direction), or a walk between
  iterates (``direction="walk"``)."""
  a, l = _floats("alphas", alphas), _floats("losses", losses)
  if len(a) != len(l):
    raise ValueError(f"alphas and losses differ in length: {len(a)} vs {len(l)}")
  return _write("loss_slice", name, {"alphas": a, "losses": l,
                                     "direction": direction, "scale": scale,
                                     **(extra or {})}, step)


def step_analysis(name: str, factors: Sequence[float], changes, step: int, *,
                  directions: Sequence[str]) -> bool:
  """Relative loss change (%) for each direction (rows) and step factor."""
  f = _floats("factors", factors)
  c = np.asarray(changes, dtype=np.float64)
  if c.shape != (len(directions), len(f)):
    raise ValueError(f"changes must have shape ({len(directions)}, {len(f)}), "
                     f"got {c.shape}")
  return _write("step_analysis", name, {"factors": f, "changes": c,
                                        "directions": list(directions)}, step)


def surface(name: str, xs: Sequence[float], ys: Sequence[float], losses,
            step: int, *, directions: Sequence[str] = ("e1", "e2")) -> bool:
  """A 2-D loss surface, ``losses[i][j]`` at (xs[j], ys[i])."""
  x, y = _floats("xs", xs), _floats("ys", ys)
  z = np.asarray(losses, dtype=np.float64)
  if z.shape != (len(y), len(x)):
    raise ValueError(f"losses must have shape ({len(y)}, {len(x)}), got {z.shape}")
  return _write("surface", name, {"xs": x, "ys": y, "losses": z,
                                  "directions": list(directions)}, step)


def phase_diagram(name: str, records: Sequence[dict], step: int = 0) -> bool:
  """Runs of an early-training sweep: dicts with at least ``c``, ``width``,
  ``depth`` and a ``phase`` label."""
  return _write("phase_diagram", name, {"records": list(records)}, step)


def rotation(name: str, overlaps, step: int, *, principal_angles=None,
             gradient_overlap: float | None = None) -> bool:
  """|<e_i(t), e_j(t')>| between consecutive measurements."""
  return _write("rotation", name, {
      "overlaps": np.asarray(overlaps, dtype=np.float64),
      "principal_angles": principal_angles,
      "gradient_overlap": gradient_overlap}, step)


def blocks(name: str, spectra: dict, mass: dict, step: int) -> bool:
  """Per-layer curvature at ``step``: ``spectra[block]["top_eigenvalues"]``
  (the top-k of the diagonal Hessian block) and ``mass[block][i]``, the
  share of the i-th top eigenvector of the full Hessian in that block."""
  if set(spectra) != set(mass):
    raise ValueError(f"spectra and mass name different blocks: {sorted(spectra)} vs "
                     f"{sorted(mass)}")
  names = list(spectra)
  return _write("blocks", name, {
      "blocks": names,
      "top_eigenvalues": [_floats(n, spectra[n]["top_eigenvalues"]) for n in names],
      "mass": [_floats(n, mass[n]) for n in names]}, step)


def sharpness(name: str, values: dict, step: int, *, stderr: dict | None = None,
              settings: dict | None = None) -> bool:
  """Named sharpness measures at ``step`` (``tf_sharpness.sharpness``), with
  standard errors where they are Monte-Carlo estimates."""
  if not values:
    raise ValueError("values must name at least one measure")
  return _write("sharpness", name, {"values": {k: float(v) for k, v in values.items()},
                                    "stderr": dict(stderr or {}),
                                    "settings": dict(settings or {})}, step)


def _threshold_list(thresholds) -> list[dict]:
  return [{"label": str(t["label"] if isinstance(t, dict) else t.label),
           "value": float(t["value"] if isinstance(t, dict) else t.value)}
          for t in thresholds]


def directional(name: str, values: dict, step: int, *, thresholds: Sequence = ()) -> bool:
  """Curvature along the optimizer's own directions at ``step``
  (``tf_sharpness.directional``): ``values`` maps a direction's name
  (``gradient``, ``update``, ``critical_update``, ``batch``) to its
  curvature; ``thresholds`` the optimizer's stability lines, as for
  ``eigenvalues``."""
  kept = {str(k): float(v) for k, v in values.items()
          if v is not None and math.isfinite(float(v))}
  if not kept:
    raise ValueError("values must hold at least one finite curvature")
  return _write("directional", name, {"values": kept,
                                      "thresholds": _threshold_list(thresholds)}, step)


def lambda_interval(name: str, interval: dict, step: int) -> bool:
  """An interval for the full-data lambda_max at ``step``
  (``subsample.lambda_max_interval``): ``lower``, ``upper``, ``plug_in``
  and ``confidence``, with any other fields it has (``bias_corrected``,
  ``examples``, ...); drawn as a band around lambda_max."""
  missing = [k for k in ("lower", "upper", "plug_in", "confidence") if k not in interval]
  if missing:
    raise ValueError(f"interval lacks {missing}")
  if not interval["lower"] <= interval["upper"]:
    raise ValueError(f"interval lower {interval['lower']} exceeds upper {interval['upper']}")
  return _write("lambda_interval", name, dict(interval), step)
