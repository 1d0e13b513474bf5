"""Edge of stability (Cohen et al. 2021): under full-batch GD the sharpness
rises to 2/eta and hovers there (2(1 + beta)/eta with heavy-ball momentum
beta).  One run per (eta, beta) of a base ``training.Config``; each run's
summary gives the late-time ratio lambda_max / threshold, lambda_max
averaged over the last ``late_fraction`` of the measurements."""

from __future__ import annotations

import dataclasses
import os

from tf_sharpness import training


def threshold(learning_rate: float, momentum: float = 0.0) -> float:
  """2 (1 + beta) / eta: the stability limit of GD with heavy-ball momentum
  on a quadratic."""
  return 2 * (1 + momentum) / learning_rate


def run_name(learning_rate: float, momentum: float) -> str:
  return f"lr{learning_rate:g}" + (f"_beta{momentum:g}" if momentum else "")


def late_ratio(records: list[dict], limit: float, fraction: float) -> tuple[float, list]:
  """(mean lambda_max over the last ``fraction`` of the measurements / limit,
  every measured lambda_max)."""
  tops = [r["top_eigenvalues"][0] for r in records if "top_eigenvalues" in r]
  late = tops[int(len(tops) * (1 - fraction)):]
  return sum(late) / len(late) / limit, tops


def config(base: training.Config, learning_rate: float, momentum: float,
           out: str, **overrides) -> training.Config:
  """The base configuration at (eta, beta), logging to OUT/<run name>."""
  return dataclasses.replace(base, learning_rate=learning_rate, momentum=momentum,
                             logdir=os.path.join(out, run_name(learning_rate, momentum)),
                             **overrides)


def summarize(records: list[dict], learning_rate: float, momentum: float,
              late_fraction: float) -> dict:
  """One run's entry of eos.json (scripts/eos_report.py reads it)."""
  diverged = bool(records[-1].get("diverged"))
  limit = threshold(learning_rate, momentum)
  ratio, tops = late_ratio(records, limit, late_fraction)
  return {"run": run_name(learning_rate, momentum), "learning_rate": learning_rate,
          "momentum": momentum, "threshold": limit, "diverged": diverged,
          "late_ratio": None if diverged else ratio,
          "initial_sharpness": tops[0], "max_sharpness": max(tops),
          "steps": [r["step"] for r in records if "top_eigenvalues" in r],
          "sharpness": tops,
          "loss": [(r["step"], r["loss"]) for r in records
                   if r.get("loss") is not None and r["loss"] < float("inf")]}
