"""Early-training phase diagram (Kalra & Barkeshli 2023): runs, their
store and the critical values.

For one (depth, width, seed) of a ReLU FCN (``Configuration``): the initial
sharpness lambda_0 (Lanczos on ``hessian_size`` training examples), then,
for c = 2^x, ``steps`` SGD steps (MSE) from the same initialization with
eta = c / lambda_0, recording the training loss and the sharpness lambda_t
after every step and the loss along the straight line theta_0 -> theta_T.
From the runs of one configuration, as in the paper's code
(dayal-kalra/early-training):

* c_loss:    smallest c at which the loss ever exceeds its initial value;
* c_sharp:   smallest c at which lambda_t ever exceeds lambda_0;
* c_max:     largest c that does not diverge (loss > ``divergence`` x initial);
* c_barrier: smallest c at which the interpolation theta_0 -> theta_T rises
             above the initial loss (c_max if none does; by more than
             ``BARRIER_RTOL``, the round-off of evaluating theta_0 again).

``sweep`` runs x from 0 in steps of ``coarse_dx`` until the loss diverges,
then refines every critical value with steps of ``dx`` inside the coarse
bracket that holds it, so each comes with a one-step uncertainty (or runs
a given grid of x only, ``x_values``).  ``at_horizon`` reads a run as if it
had stopped after fewer steps, so one sweep gives the critical values at
every horizon up to its own.  Every
run is a record (a dict) appended to a ``RunStore`` (runs.jsonl) as soon as
it is done, with the settings it was made with (its ``protocol``): a sweep
resumes from the records of the same settings.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Callable

from tf_sharpness import rundir
from tf_sharpness.config import check_fields, like, seeds_setting, setting
from tf_sharpness.errors import ConfigError
from tf_sharpness.models import FCN_INITS

CRITICAL = ("c_loss", "c_sharp", "c_max", "c_barrier")


@dataclasses.dataclass(frozen=True)
class Settings:
  """The sweep of every (depth, width, seed), the paper's setting by
  default (he_normal, no biases, every image standardized on its own)."""
  dataset: str = like("dataset")
  standardize: str = like("standardize", "per_example")
  train_order: str = like("train_order")
  train_size: int = like("train_size", 4096, minimum=8)
  batch_size: int = like("batch_size", 512, minimum=1)
  steps: int = like("steps", 10)
  hessian_size: int = like("hessian_size", 1024, minimum=1)
  depths: tuple = setting((7,), "FCN hidden layers (the paper's d minus 1).", items=int,
                          item_minimum=1, nonempty=True)
  widths: tuple = setting((64, 128, 256), "FCN widths.", items=int, item_minimum=1,
                          nonempty=True)
  init: str = setting("he_normal", "Initialization: the paper's he_normal or Keras' "
                      "glorot_uniform.", choices=FCN_INITS)
  use_bias: bool = setting(False, "Biases in the dense layers (the paper: none).")
  coarse_dx: float = setting(0.5, "Step of x in c = 2^x for the first sweep.", minimum=1e-3)
  dx: float = setting(0.1, "Step of x inside the brackets of the critical values.",
                      minimum=1e-3)
  x_max: float = setting(6.0, "Largest x tried if nothing diverges.", minimum=0)
  x_values: tuple = setting((), "Run exactly these x (c = 2^x) instead of the sweep (no "
                            "refinement): each critical value is bracketed by this grid, "
                            "or only bounded where it lies outside it.", items=float,
                            distinct=True)
  divergence: float = setting(1e3, "Loss / initial loss that counts as divergence.",
                              minimum=1)
  seeds: tuple = seeds_setting((0,), "Seeds: each sets the initialization, the "
                               "class-balanced training subset, the batches and the Lanczos "
                               "start; every (depth, width) runs once per seed.")
  workers: int = setting(2, "Parallel worker processes.", minimum=1)
  shard: str = setting("0/1", "i/n: run every n-th configuration from the i-th.")
  out: str = setting("runs/phase", "Output folder.")

  def __post_init__(self):
    check_fields(self)
    self.shard_of()

  def shard_of(self) -> tuple[int, int]:
    """(i, n) of `shard`."""
    try:
      i, n = (int(v) for v in self.shard.split("/"))
    except ValueError:
      raise ConfigError(f"`shard` must be i/n (integers), got {self.shard!r}") from None
    if not 0 <= i < n:
      raise ConfigError(f"`shard` must be i/n with 0 <= i < n, got {self.shard}")
    return i, n

  def configurations(self) -> list[tuple[int, int, int]]:
    """(depth, width, seed) of this shard."""
    i, n = self.shard_of()
    return [(d, w, s) for d in self.depths for w in self.widths for s in self.seeds][i::n]

  def opts(self, seed: int) -> dict:
    """What ``sweep`` reads (``protocol`` keeps the part that defines a run)."""
    return {"dataset": self.dataset, "init": self.init, "use_bias": self.use_bias,
            "standardize": self.standardize, "train_size": self.train_size,
            "batch_size": self.batch_size, "steps": self.steps, "coarse_dx": self.coarse_dx,
            "dx": self.dx, "x_max": self.x_max, "x_values": self.x_values,
            "divergence": self.divergence, "hessian_size": self.hessian_size,
            "train_order": self.train_order, "seed": seed}


# ------------------------------------------------------------- definitions


def exceeds_loss(r):
  return r["diverged"] or max(r["losses"]) > r["loss0"]


def exceeds_sharpness(r):
  return r["diverged"] or max(r["sharpness"]) > r["lambda0"]


# The interpolation starts at theta_0, whose loss is loss_0 again up to the
# round-off of a float32 mean (about 1e-7 relative): a barrier must rise above it.
BARRIER_RTOL = 1e-5


def has_barrier(r):
  return r["diverged"] or (r["interpolation_max"] or 0.0) > r["loss0"] * (1 + BARRIER_RTOL)


PREDICATES = {"c_loss": exceeds_loss, "c_sharp": exceeds_sharpness,
              "c_max": lambda r: r["diverged"], "c_barrier": has_barrier}


def divergence_step(record):
  """The step (counted from 1) at which a diverged run stopped: a non-finite
  loss or lambda_t at step k leaves k - 1 sharpness values (and k - 1 or k
  losses); a loss above ``divergence`` x loss_0 leaves k of each."""
  losses, sharpness = record["losses"], record["sharpness"]
  if len(losses) > len(sharpness):
    return len(losses)
  limit = record.get("protocol", {}).get("divergence", 1e3) * record["loss0"]
  return len(losses) if losses and losses[-1] > limit else len(losses) + 1


def at_horizon(record, steps):
  """The record as if its run had stopped after ``steps`` SGD steps: its
  losses and lambda_t up to then, diverged if it diverged by then.  The
  interpolation theta_0 -> theta_steps was not measured: None (c_barrier is
  then unknown) unless ``steps`` covers the whole run."""
  if record["diverged"]:
    if divergence_step(record) <= steps:
      return record
  elif len(record["losses"]) <= steps:
    return record
  return {**record, "losses": record["losses"][:steps],
          "sharpness": record["sharpness"][:steps], "diverged": False,
          "interpolation_max": None}


def critical_values(records, horizon=None):
  """The four critical c of one (depth, width) with their brackets: c_loss,
  c_sharp and c_barrier lie in (``<name>_lo``, c] (``_lo`` the largest c
  tried below), c_max in [c_max, ``c_max_hi``) (the first diverging c).
  With ``horizon``, of the runs read up to that step (``at_horizon``); a
  c_barrier that needs an unmeasured interpolation is None."""
  if horizon is not None:
    records = [at_horizon(r, horizon) for r in records]
  records = sorted(records, key=lambda r: r["x"])
  out = {"depth": records[0]["depth"], "width": records[0]["width"],
         "seed": seed_of(records[0]), "lambda0": records[0]["lambda0"],
         "loss0": records[0]["loss0"]}
  for name, pred in PREDICATES.items():
    i = next((j for j, r in enumerate(records) if pred(r)), None)
    if name == "c_max":  # the last c before the first divergence
      ok = records[:i] if i is not None else records
      out["c_max"] = ok[-1]["c"] if ok else None
      out["c_max_hi"] = records[i]["c"] if i is not None else None
      continue
    if name == "c_barrier" and any(r["interpolation_max"] is None and not r["diverged"]
                                   for r in records[:i]):
      out["c_barrier"], out["c_barrier_lo"] = None, None  # not measured at this horizon
      continue
    if name == "c_barrier" and (i is None or records[i]["diverged"]):
      # no barrier below divergence: c_max by the paper's convention
      out["c_barrier"], out["c_barrier_lo"] = out["c_max"], None
      continue
    out[name] = records[i]["c"] if i is not None else None
    out[f"{name}_lo"] = records[i - 1]["c"] if i else None
  return out


def seed_of(record):
  """The seed a record was made with (kept in its protocol)."""
  return record.get("protocol", {}).get("seed", 0)


def pinned(row, name):
  """Whether a seed's critical value was found, not just bounded: without a
  divergence up to x_max, c_max (and c_barrier, which then defaults to it)
  is only a lower bound; c_loss, c_sharp or c_barrier crossed already at the
  first c tried (no ``_lo``, as a grid of ``x_values`` may start above it)
  only an upper bound."""
  if row[name] is None:
    return False
  if name == "c_max" or (name == "c_barrier" and from_c_max(row)):
    return row["c_max_hi"] is not None
  return row.get(f"{name}_lo") is not None


def from_c_max(row):
  """c_barrier set to c_max by the paper's convention (no barrier below it)."""
  return row["c_barrier_lo"] is None and row["c_barrier"] == row["c_max"]


def across_seeds(rows):
  """Per (depth, width): every critical value over the seeds, as
  ``{name: (values, mean, smallest, largest)}`` of the seeds that pinned it
  down (see ``pinned``); the mean is clipped into [smallest, largest]
  against round-off."""
  out = {}
  for row in rows:
    out.setdefault((row["depth"], row["width"]), []).append(row)
  table = {}
  for key, group in sorted(out.items()):
    table[key] = {"seeds": [r["seed"] for r in group],
                  "lambda0": [r["lambda0"] for r in group]}
    for name in CRITICAL:
      values = [r[name] for r in group if pinned(r, name)]
      if not values:
        table[key][name] = ([], None, None, None)
        continue
      lo, hi = min(values), max(values)
      table[key][name] = (values, min(max(sum(values) / len(values), lo), hi), lo, hi)
  return table


def refinement(records, dx):
  """The x values inside the brackets of the critical values not yet tried."""
  records = sorted(records, key=lambda r: r["x"])
  xs = [r["x"] for r in records]
  todo = set()
  for pred in PREDICATES.values():
    i = next((j for j, r in enumerate(records) if pred(r)), None)
    if not i:
      continue
    lo, hi = xs[i - 1], xs[i]
    steps = int(round((hi - lo) / dx))
    todo.update(round(lo + k * dx, 6) for k in range(1, steps))
  return sorted(x for x in todo if x not in set(xs))


def phase_of(record):
  """The early-training regime of one run."""
  if record["diverged"]:
    return "divergence"
  if max(record["losses"]) > record["loss0"]:
    return "loss catapult"
  if max(record["sharpness"]) > record["lambda0"]:
    return "sharpening"
  return "sharpness reduction"


def finished(records, coarse_dx, dx, x_max, x_values=()):
  """Whether a configuration's sweep is complete, as the driver ends it: a c
  diverged or the coarse sweep's next step would pass x_max, and every
  bracket is refined to dx (with ``x_values``: every one of them was run)."""
  if x_values:
    return {round(x, 6) for x in x_values} <= {r["x"] for r in records}
  last = max(r["x"] for r in records)
  done = any(r["diverged"] for r in records) or last + coarse_dx > x_max + 1e-9
  return done and not refinement(records, dx)


# --------------------------------------------------------------------- runs


class Configuration:
  """One (depth, width): the model at its initialization and the c runs."""

  def __init__(self, depth, width, opts):
    import keras  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tf_sharpness as tfs  # pylint: disable=g-import-not-at-top
    from tf_sharpness import data, losses, models  # pylint: disable=g-import-not-at-top
    from tf_sharpness.train_step import TrainStep  # pylint: disable=g-import-not-at-top
    self.np, self.tfs = np, tfs
    self.depth, self.width, self.opts = depth, width, opts
    prep = data.prepare(data.load(opts["dataset"]), train_size=opts["train_size"],
                        standardize=opts["standardize"], seed=opts["seed"],
                        order=opts.get("train_order", "source"))
    self.x, self.y = prep.train_x, prep.train_y
    loss_fn = losses.mean_loss("mse")
    keras.utils.set_random_seed(opts["seed"])
    self.model = models.fcn(prep.input_shape, prep.num_classes, depth=depth,
                            width=width, activation="relu", init=opts["init"],
                            use_bias=opts["use_bias"])
    self.init = [w.numpy() for w in self.model.trainable_variables]
    n = opts["hessian_size"]
    self.hessian = tfs.HessianOperator(self.model, loss_fn, (self.x[:n], self.y[:n]))
    self.evaluator = tfs.LossEvaluator(self.model, loss_fn, (self.x, self.y))
    top = tfs.top_eigenpairs(self.hessian, k=1, tol=1e-3, seed=opts["seed"])
    self.lambda0, self.v0 = float(top.eigenvalues[0]), top.flat_eigenvectors()[0]
    self.loss0 = self.evaluator.loss()
    self.optimizer = keras.optimizers.SGD(learning_rate=1.0)
    self.step = TrainStep(self.model, self.optimizer, losses.per_example_loss("mse"))
    rng = np.random.default_rng(opts["seed"])
    self.batches = [rng.choice(len(self.y), opts["batch_size"], replace=False)
                    for _ in range(opts["steps"])]

  def run(self, x):
    """Trains from the initialization at c = 2^x; returns its record."""
    np, tfs, opts = self.np, self.tfs, self.opts
    c = 2.0 ** x
    for w, v in zip(self.model.trainable_variables, self.init):
      w.assign(v)
    self.optimizer.learning_rate.assign(c / self.lambda0)
    losses, sharpness, diverged, start = [], [], False, self.v0
    for idx in self.batches:
      self.step(self.x[idx], self.y[idx])
      try:
        losses.append(self.evaluator.loss())
        top = tfs.top_eigenpairs(self.hessian, k=1, tol=1e-2, start=start)
      except tfs.NonFiniteError:
        diverged = True
        break
      sharpness.append(float(top.eigenvalues[0]))
      start = top.flat_eigenvectors()[0]  # lambda_t moves little per step
      if losses[-1] > opts["divergence"] * self.loss0:
        diverged = True
        break
    barrier = None
    if not diverged:
      from tf_sharpness import landscape  # pylint: disable=g-import-not-at-top
      theta0 = np.concatenate([v.reshape(-1) for v in self.init]).astype(np.float64)
      walk = landscape.walk(self.evaluator, theta0, self.evaluator.parameters(),
                            num_points=11)
      barrier = float(np.max(walk.losses))
    return {"depth": self.depth, "width": self.width, "c": c, "x": round(x, 6),
            "learning_rate": c / self.lambda0, "lambda0": self.lambda0,
            "loss0": self.loss0, "losses": losses, "sharpness": sharpness,
            "diverged": diverged, "interpolation_max": barrier,
            "protocol": protocol(opts)}


def protocol(opts):
  """The settings a record was made with (a rerun with others starts anew).
  ``train_order`` is left out where it is ``source``: the records made
  before it existed (their lambda_0 on the first `hessian_size` examples of
  a class-by-class training set) match only a rerun with that order."""
  keys = ("dataset", "init", "use_bias", "standardize", "train_size", "batch_size",
          "steps", "hessian_size", "divergence", "seed")
  out = {k: opts[k] for k in keys}
  if opts.get("train_order", "source") != "source":
    out["train_order"] = opts["train_order"]
  return out


def sweep(depth: int, width: int, opts: dict, store: RunStore,
          on_record: Callable[[dict], None] | None = None,
          before_run: Callable[[], None] | None = None) -> list[dict]:
  """All c of one (depth, width, seed) (the seed in ``opts``): the coarse
  sweep up to the first divergence, then every bracket refined to ``dx``;
  records already in ``store`` with the same settings are reused and every
  new one is appended at once (then passed to ``on_record``);
  ``before_run()`` is called before each new run (it may raise to stop).
  With ``opts["x_values"]``, runs those x only.  Returns the records sorted
  by x (with ``x_values``, those of every x run so far)."""
  done = {r["x"]: r for r in store.read(opts) if (r["depth"], r["width"]) == (depth, width)}
  config = None

  def run(x):
    nonlocal config
    if round(x, 6) in done:
      return done[round(x, 6)]
    if before_run is not None:
      before_run()
    if config is None:
      config = Configuration(depth, width, opts)
    record = config.run(x)
    store.append(record)
    done[record["x"]] = record
    if on_record is not None:
      on_record(record)
    return record

  if opts.get("x_values"):  # the given grid only
    for x in opts["x_values"]:
      run(x)
    return sorted(done.values(), key=lambda r: r["x"])
  x = 0.0
  while x <= opts["x_max"] + 1e-9:  # the coarse sweep, up to the first divergence
    if run(x)["diverged"]:
      break
    x += opts["coarse_dx"]
  while True:  # refine every bracket down to dx
    todo = refinement(list(done.values()), opts["dx"])
    if not todo:
      break
    for x in todo:
      run(x)
  return sorted(done.values(), key=lambda r: r["x"])


RECORD_KEYS = frozenset({"depth", "width", "x", "c", "lambda0", "loss0", "losses",
                         "sharpness", "interpolation_max", "diverged"})


class RunStore:
  """runs.jsonl: one record per c, appended and flushed as soon as it is
  done (a half-written last line, left by a kill, is skipped on reading)."""

  def __init__(self, path: str):
    self.path = path

  def read(self, opts: dict) -> list[dict]:
    """The records made with these settings."""
    return [r for r in rundir.read_metrics(self.path) if r.get("protocol") == protocol(opts)]

  def append(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def read_one_sweep(self) -> list[dict]:
    """Every record, checked to be this module's and made with one set of
    settings (seeds aside); raises ValueError (or OSError) otherwise."""
    try:
      records = rundir.read_metrics(self.path)
    except rundir.RunDirError as e:
      raise ValueError(str(e)) from None
    if not records or not all(RECORD_KEYS <= r.keys() for r in records):
      raise ValueError(f"not a phase diagram's runs.jsonl (each line needs "
                       f"{', '.join(sorted(RECORD_KEYS))})")
    settings = {json.dumps({k: v for k, v in r.get("protocol", {}).items() if k != "seed"},
                           sort_keys=True) for r in records}
    if len(settings) > 1:
      raise ValueError(f"holds runs made with {len(settings)} different settings "
                       "(protocols); give one sweep's runs.jsonl")
    return records


def by_configuration(records: list[dict]) -> dict[tuple, list[dict]]:
  """The records grouped by (depth, width, seed)."""
  groups = {}
  for r in records:
    groups.setdefault((r["depth"], r["width"], seed_of(r)), []).append(r)
  return groups


# ------------------------------------------------------------------- tables


def first_step_above(values, level):
  """The first step (from 1) whose value exceeds ``level``; None if none."""
  return next((i + 1 for i, v in enumerate(values) if v > level), None)


def runs_table(records: list[dict]) -> str:
  """One line per c: what decides its phase (largest loss and lambda_t in
  the steps against loss_0 and lambda_0, the interpolation's maximum) and
  the first step whose loss exceeds loss_0 (when the catapult comes)."""
  lines = ["| depth | width | seed | x | c | lambda_0 | loss_0 | largest loss "
           "| loss > loss_0 from step | largest lambda_t | interpolation max | phase |",
           "| --- " * 12 + "|"]
  key = lambda r: (r["depth"], r["width"], seed_of(r), r["x"])
  for r in sorted(records, key=key):
    top = lambda v: "—" if r["diverged"] or not v else f"{max(v):.4g}"
    interpolation = [] if r["interpolation_max"] is None else [r["interpolation_max"]]
    rise = first_step_above(r["losses"], r["loss0"])
    lines.append(f"| {r['depth']} | {r['width']} | {seed_of(r)} | {r['x']:g} | {r['c']:.3f} | "
                 f"{r['lambda0']:.1f} | {r['loss0']:.3f} | {top(r['losses'])} | "
                 f"{'—' if rise is None else rise} | "
                 f"{top(r['sharpness'])} | {top(interpolation)} | {phase_of(r)} |")
  return "\n".join(lines)


def critical_table(rows: list[dict]) -> str:
  """The critical values of every seed with their one-step brackets, then
  (with more than one seed) their mean and range over the seeds."""
  fmt = lambda v: "—" if v is None else f"{v:.2f}"
  def cell(row, name):
    if name == "c_barrier" and from_c_max(row):
      return "= c_max"
    lo = row.get(f"{name}_lo") if name != "c_max" else None
    hi = row.get("c_max_hi") if name == "c_max" else None
    bracket = (f" ({fmt(lo)}, {fmt(row[name])}]" if lo is not None else
               f" [{fmt(row[name])}, {fmt(hi)})" if hi is not None else "")
    if name != "c_max" and row[name] is not None and lo is None:
      return "≤ " + fmt(row[name])  # crossed at the first c tried
    return fmt(row[name]) + bracket
  lines = ["| depth | width | seed | lambda_0 | " + " | ".join(CRITICAL) + " |",
           "| --- " * (4 + len(CRITICAL)) + "|"]
  for row in rows:
    lines.append(f"| {row['depth']} | {row['width']} | {row['seed']} | {row['lambda0']:.1f} | "
                 + " | ".join(cell(row, name) for name in CRITICAL) + " |")
  table = across_seeds(rows)
  if all(len(t["seeds"]) == 1 for t in table.values()):
    return "\n".join(lines)
  lines += ["", "| depth | width | seeds | lambda_0: mean (range) | "
            + " | ".join(f"{name}: mean (range)" for name in CRITICAL) + " |",
            # (a c_max without a divergence up to x_max is a lower bound, not averaged)
            "| --- " * (4 + len(CRITICAL)) + "|"]
  for (depth, width), t in table.items():
    lam = t["lambda0"]
    n = len(t["seeds"])
    cells = [f"{fmt(mean)} ({fmt(lo)}–{fmt(hi)})"
             + (f", {len(values)} of {n} seeds" if len(values) < n else "") if values else "—"
             for values, mean, lo, hi in (t[name] for name in CRITICAL)]
    lines.append(f"| {depth} | {width} | {len(t['seeds'])} | {sum(lam) / len(lam):.1f} "
                 f"({min(lam):.1f}–{max(lam):.1f}) | " + " | ".join(cells) + " |")
  return "\n".join(lines)


# ------------------------------------------------------------------ outputs


def run_configuration(job: dict) -> list[dict]:
  """One worker's job (``run``): every c of one (depth, width, seed), each
  printed when done (progress from the worker); stops when the process
  that started it is gone."""
  import multiprocessing  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  depth, width, seed = job["depth"], job["width"], job["opts"]["seed"]

  def driver_alive():
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():  # the driver was killed
      sys.exit(f"depth {depth} width {width}: the driver is gone; stopping")

  def show(record):
    print(f"{time.strftime('%H:%M:%S')} depth {depth} width {width} seed {seed} "
          f"c {record['c']:.3g}: {phase_of(record)}", flush=True)

  return sweep(depth, width, job["opts"], RunStore(job["path"]), on_record=show,
               before_run=driver_alive)


def run(settings: Settings, on_configuration: Callable | None = None
        ) -> tuple[list[dict], list[dict]]:
  """Every configuration of ``settings`` on ``settings.workers`` spawned
  processes (finished c values in OUT/runs.jsonl are reused), then
  ``write_outputs``; returns (critical values per configuration, in
  ``configurations()`` order, and every run record).  ``on_configuration(row)``
  is called as each configuration finishes.  Leaving early (an exception,
  SIGTERM turned into one by the caller) terminates the workers."""
  import multiprocessing  # pylint: disable=g-import-not-at-top
  configs = settings.configurations()
  os.makedirs(settings.out, exist_ok=True)
  path = os.path.join(settings.out, "runs.jsonl")
  jobs = [{"depth": d, "width": w, "opts": settings.opts(s), "path": path}
          for d, w, s in configs]
  done = {}
  with multiprocessing.get_context("spawn").Pool(min(settings.workers, len(jobs))) as pool:
    for records in pool.imap_unordered(run_configuration, jobs):
      row = critical_values(records)
      done[(row["depth"], row["width"], row["seed"])] = records
      if on_configuration is not None:
        on_configuration(row)
  rows = [critical_values(done[c]) for c in configs]
  records = [r for c in configs for r in done[c]]
  return rows, records


def finished_table(records: list[dict], settings: Settings, horizon: int | None = None
                   ) -> str:
  """The critical values of every configuration of ``records`` whose sweep
  is complete by ``settings``' dx and x_max (or x_values), and a line per
  unfinished one; with ``horizon``, read at that step (``at_horizon``)."""
  groups = by_configuration(records)
  complete = {k: finished(groups[k], settings.coarse_dx, settings.dx, settings.x_max,
                          settings.x_values) for k in groups}
  lines = [critical_table([critical_values(groups[k], horizon) for k in sorted(groups)
                           if complete[k]])]
  for depth, width, seed in sorted(k for k in groups if not complete[k]):
    lines.append(f"depth {depth} width {width} seed {seed}: unfinished (no divergence up "
                 f"to --x_max={settings.x_max:g} in steps of --coarse_dx="
                 f"{settings.coarse_dx:g}, or brackets not refined to --dx={settings.dx:g}, "
                 "or an x of --x_values not run); left out of the critical values")
  return "\n".join(lines)


def write_outputs(rows: list[dict], records: list[dict], out: str) -> str | None:
  """OUT/phase.csv (a row of critical values per configuration), the
  phase_diagram summary for the Spectrum tab and OUT/phase.png; returns the
  plot's path (None without matplotlib)."""
  with open(os.path.join(out, "phase.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_sharpness import summary  # pylint: disable=g-import-not-at-top
  with tf.summary.create_file_writer(out).as_default():
    summary.phase_diagram("phase_diagram", [
        {"c": r["c"], "width": r["width"], "depth": r["depth"], "seed": seed_of(r),
         "phase": phase_of(r)}
        for r in records], step=0)
  return figure(rows, records, os.path.join(out, "phase.png"))


def figure(rows: list[dict], records: list[dict], path: str) -> str | None:
  """Every run's phase against d/w and c, with the critical values' mean and
  range over the seeds; None without matplotlib."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tf_sharpness.reports import plotting  # pylint: disable=g-import-not-at-top
  plt = plotting.pyplot()
  if plt is None:
    return None
  depths = sorted({r["depth"] for r in rows})
  fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 4), squeeze=False)
  colors = {"sharpness reduction": "C0", "sharpening": "C2", "loss catapult": "C1",
            "divergence": "C3"}
  for ax, depth in zip(axes[0], depths):
    for phase, color in colors.items():
      pts = [((depth + 1) / r["width"], r["c"]) for r in records
             if r["depth"] == depth and phase_of(r) == phase]
      if pts:
        ax.scatter(*zip(*pts), s=12, color=color, label=phase)
    spread = {w: t for (d, w), t in across_seeds(rows).items() if d == depth}
    for key, style in zip(CRITICAL, ("-", "--", ":", "-.")):
      pts = sorted(((depth + 1) / w, *t[key][1:]) for w, t in spread.items()
                   if t[key][0])  # d/w, mean, smallest, largest over the seeds
      if pts:
        dw, mean, lo, hi = (np.array(v) for v in zip(*pts))
        ax.errorbar(dw, mean, yerr=[mean - lo, hi - mean], fmt="k" + style, linewidth=1,
                    capsize=2, label=key)
    widths = sorted({r["width"] for r in rows if r["depth"] == depth})
    ax.set_xscale("log")
    ax.set_xticks([(depth + 1) / w for w in widths],
                  [f"{depth + 1}/{w}" for w in widths])
    ax.minorticks_off()
    ax.set_yscale("log", base=2)
    ax.set_xlabel("d / w (layers / width)")
    ax.set_ylabel("c = η λ₀")
    ax.set_title(f"d = {depth + 1} ({depth} hidden layers)")
  # beside the last panel: inside, it covers the points of the narrowest width
  axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path
