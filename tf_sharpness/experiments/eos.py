"""Edge of stability (Cohen et al. 2021): under full-batch GD the sharpness
rises to 2/eta and hovers there (2(1 + beta)/eta with heavy-ball momentum
beta).  One run per (eta, beta) of a base ``training.Config``; each run's
summary gives the late-time ratio lambda_max / threshold, lambda_max
averaged over the last ``late_fraction`` of the measurements."""

from __future__ import annotations

import dataclasses
import os

from tf_sharpness import reuse, training
from tf_sharpness.config import check_fields, like, setting, settings_json
from tf_sharpness.errors import ConfigError
from tf_sharpness.reports import plotting, tables, trajectory


@dataclasses.dataclass(frozen=True)
class Settings:
  """Full-batch GD at each learning rate (and heavy-ball runs) from a base
  configuration (the shipped eos.cfg in the command line)."""
  dataset: str = like("dataset")
  train_order: str = like("train_order")
  steps: int = like("steps", 3000)
  train_size: int = like("train_size", 1000, minimum=10)
  spectrum_every: int = like("spectrum_every", 25, minimum=1)
  checkpoint_every: int = like("checkpoint_every", 500, minimum=1)
  learning_rates: tuple = setting((0.01, 0.02, 0.04), "GD learning rates.", items=float)
  momentum_runs: tuple = setting((), "Extra runs as LR:BETA with heavy-ball momentum.",
                                 items=str)
  late_fraction: float = setting(0.2, "Fraction of measurements that count as late.")
  out: str = setting("runs/eos", "Output folder.")

  def __post_init__(self):
    check_fields(self)
    self.runs()  # LR:BETA items, or a ConfigError
    if not 0 < self.late_fraction <= 1:
      raise ConfigError(f"`late_fraction` must be in (0, 1], got {self.late_fraction}")
    if any(lr <= 0 for lr, _ in self.runs()):
      raise ConfigError("`learning_rates` and `momentum_runs` need learning rates > 0")

  def runs(self) -> list[tuple[float, float]]:
    """(eta, beta) of every run: the learning rates without momentum, then
    the momentum runs."""
    out = [(float(lr), 0.0) for lr in self.learning_rates]
    for spec in self.momentum_runs:
      try:
        lr, beta = (float(v) for v in spec.split(":"))
      except ValueError:
        raise ConfigError(f"`momentum_runs` must be LR:BETA items, got {spec!r}") from None
      out.append((lr, beta))
    return out


def run(settings: Settings, base: training.Config, on_run=None) -> list[dict]:
  """Every (eta, beta) of ``settings`` from ``base``, trained (or reused),
  summarized; ``on_run(summary, records)`` as each is done."""
  results = []
  for lr, beta in settings.runs():
    cfg = config(base, lr, beta, settings.out, dataset=settings.dataset,
                 steps=settings.steps, train_size=settings.train_size,
                 spectrum_every=settings.spectrum_every,
                 checkpoint_every=settings.checkpoint_every,
                 train_order=settings.train_order)
    records = reuse.train_or_reuse(cfg)
    results.append(summarize(records, lr, beta, settings.late_fraction))
    if on_run is not None:
      on_run(results[-1], records)
  return results


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


# ------------------------------------------------------------- its JSON


RUN_KEYS = frozenset({"run", "learning_rate", "momentum", "steps", "sharpness", "loss"})


EXPERIMENT = "eos"


def to_json(settings: Settings, runs: list[dict]) -> dict:
  """eos.json: {"experiment": "eos", "settings", "runs"}."""
  return {"experiment": EXPERIMENT,
          "settings": settings_json(settings),
          "runs": runs}


def runs_of(data) -> list[dict] | None:
  """The runs of an eos.json (or of its older bare list, each run with
  ``RUN_KEYS``), None if ``data`` is no eos.json."""
  if isinstance(data, dict) and data.get("experiment") == EXPERIMENT:
    data = data.get("runs")
  ok = isinstance(data, list) and bool(data) and all(
      isinstance(r, dict) and RUN_KEYS <= r.keys() for r in data)
  return data if ok else None


def is_result(data) -> bool:
  return runs_of(data) is not None


def as_summary(run: dict) -> dict:
  """The run in the shape ``trajectory.window`` reads (x = steps)."""
  loss = dict((int(s), l) for s, l in run["loss"])
  return {"steps": run["steps"], "epochs": None, "lambda_max": run["sharpness"],
          "train_loss": [loss.get(s) for s in run["steps"]]}


def value_at(pairs: list, step: int, end: int) -> tuple[int, float] | None:
  """The last (step, value) pair at or before ``step``; None past ``end``,
  the run's last step (the run ended before ``step``)."""
  before = [(s, v) for s, v in pairs if s <= step]
  return before[-1] if before and step <= end else None


def loss_rises(run: dict) -> int:
  losses = [l for _, l in run["loss"]]
  return sum(b > a for a, b in zip(losses, losses[1:]))


def _top(pair) -> str:
  return tables.MISSING if pair is None else f"{pair[1]:.1f}"


def _loss(pair, step=None) -> str:
  """A logged loss, with its step when it is not the one asked for (the
  driver logs the loss every few steps)."""
  if pair is None:
    return tables.MISSING
  return tables.significant(pair[1]) + ("" if pair[0] == step else f" (step {pair[0]})")


def runs_table(runs: list[dict], at_steps: list[int], below: float = 1e-3) -> str:
  """Per run: the thresholds, lambda_0, the smallest lambda_max after the
  first measurement, lambda_max and the loss at each of ``at_steps``, the
  last lambda_max and its ratios, the last loss, the loss rises and the
  first step with a loss below ``below``."""
  lines = [tables.header(
      ["run", "2/eta", "2(1+beta)/eta", "lambda_0", "smallest lambda_max after the first",
       *(c for s in at_steps for c in (f"lambda_max at {s}", f"loss at {s}")),
       "last lambda_max", "its ratio to 2/eta", "to 2(1+beta)/eta", "last logged loss",
       "loss rises", f"first loss < {below:g}"])]
  for r in runs:
    plain = 2 / r["learning_rate"]
    threshold = plain * (1 + r["momentum"])
    sharp = list(zip(r["steps"], r["sharpness"]))
    head = (f"| {r['run']} | {plain:.1f} | {threshold:.1f} | "
            f"{_top(sharp[0] if sharp else None)} |")
    if r.get("diverged") or not sharp:
      lines.append(head + " diverged (last measurement at step "
                   f"{sharp[-1][0] if sharp else tables.MISSING}) |"
                   + f" {tables.MISSING} |" * (2 * len(at_steps) + 6))
      continue
    low = min(sharp[1:], key=lambda p: p[1]) if len(sharp) > 1 else None
    first = next((s for s, l in r["loss"] if l < below), None)
    (end, last), logged = sharp[-1], (r["loss"][-1] if r["loss"] else None)
    lines.append(
        head + (f" {low[1]:.1f} (step {low[0]}) |" if low else f" {tables.MISSING} |")
        + "".join(f" {_top(value_at(sharp, s, end))} | "
                  f"{_loss(value_at(r['loss'], s, end), s)} |" for s in at_steps)
        + f" {last:.1f} (step {end}) | {last / plain:.3f} | {last / threshold:.3f} | "
        f"{_loss(logged)} | {loss_rises(r)} | {'never' if first is None else first} |")
  return "\n".join(lines)


def windows_table(runs: list[dict], windows: list[tuple[float, float]]) -> str:
  """``trajectory.window`` of lambda_max over each stretch of steps A:B."""
  lines = [tables.header(
      ["run", "steps", "measurements", "mean lambda_max", "range", "above 2(1+beta)/eta",
       "above 2/eta", "slope per step", "change first to last"])]
  for r in runs:
    limits = {"momentum": 2 * (1 + r["momentum"]) / r["learning_rate"],
              "plain": 2 / r["learning_rate"]}
    summary = as_summary(r)
    for a, b in windows:
      w = trajectory.window(summary, a, b, limits)
      inside = [t for s, t in zip(r["steps"], r["sharpness"]) if a <= s <= b]
      change = (f"{100 * (inside[-1] / inside[0] - 1):+.2f}%"
                if len(inside) > 1 and inside[0] else tables.MISSING)
      lines.append(
          f"| {r['run']} | {a:g}–{b:g} | {w['count']} | {tables.fixed(w['mean'], 1)} | "
          f"{tables.span(w['min'], w['max'])} | {w['above']['momentum']} | "
          f"{w['above']['plain']} | {tables.slope(w['slope'])} | {change} |")
  return "\n".join(lines)


def figure(results: list[dict], path: str) -> str | None:
  """Sharpness against its threshold and the loss, per run (None without
  matplotlib)."""
  plt = plotting.pyplot()
  if plt is None:
    return None
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for i, r in enumerate(results):
    color = f"C{i}"
    if r["diverged"]:
      continue  # its sharpness explodes; reported in the table
    ax1.plot(r["steps"], r["sharpness"], color=color, label=r["run"])
    ax1.axhline(r["threshold"], color=color, linestyle="--", linewidth=1)
    ax2.plot(*zip(*r["loss"]), color=color, label=r["run"])
  ax1.set_xlabel("step")
  ax1.set_ylabel("top Hessian eigenvalue (dashed: 2(1+β)/η)")
  ax2.set_xlabel("step")
  ax2.set_ylabel("training loss (MSE)")
  ax2.set_yscale("log")
  ax1.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
