"""Early-training phase diagram (Kalra & Barkeshli 2023).

For every (depth, width) of a ReLU FCN: measure the initial sharpness
lambda_0 (Lanczos on --hessian_size training examples), then for c = 2^x
train --steps SGD steps (batch --batch_size, MSE) from the same
initialization with eta = c / lambda_0, recording the training loss and the
sharpness lambda_t after every step, and the loss along the straight line
theta_0 -> theta_T.  Per (depth, width), as in the paper's code
(dayal-kalra/early-training):

* c_loss:    smallest c at which the loss ever exceeds its initial value;
* c_sharp:   smallest c at which lambda_t ever exceeds lambda_0;
* c_max:     largest c that does not diverge (loss > --divergence x initial);
* c_barrier: smallest c at which the interpolation theta_0 -> theta_T rises
             above the initial loss (c_max if none does).

The paper's setting is the default: weights N(0, 2/fan_in) in hidden layers
and N(0, 1/fan_in) in the readout, no biases (--init=he_normal,
--nouse_bias), every image standardized on its own.  Note the depth
convention: the paper's depth d counts all layers, so d = 8 is --depths=7
(hidden layers).

x runs from 0 in steps of --coarse_dx until the loss diverges; then every
critical value is refined with steps of --dx inside the coarse bracket that
holds it, so each comes with a one-step uncertainty [c_lo, c] (c_lo the
largest c tried below it).  Every c is appended to OUT/runs.jsonl as soon as
it is done: rerunning the same command continues where it stopped.
A configuration is one (depth, width, seed); with several --seeds the
critical values are also printed as their mean and range over the seeds,
and the plot draws the mean with the range as error bars.  Configurations
run in parallel worker processes (--workers); --shard=i/n takes every n-th
configuration.  Writes OUT/phase.csv (a row per configuration), a plot and
the phase_diagram summary for the Spectrum tab.

    python scripts/phase_diagram.py --dataset=../shared/data/cifar10-jpeg.tar.gz \\
        --depths=7 --widths=256,512,1024 --out=runs/phase_paper
"""

import csv
import json
import multiprocessing
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from tf_sharpness.cli import flags as flags_lib  # noqa: E402

flags_lib.define_config_flags(
    lower_bounds={"train_size": 8, "batch_size": 1, "hessian_size": 1},
    dataset=..., standardize="per_example", train_size=4096, batch_size=512, steps=10,
    hessian_size=1024)
flags.DEFINE_list("depths", ["7"], "FCN hidden layers (the paper's d minus 1).")
flags.DEFINE_list("widths", ["64", "128", "256"], "FCN widths.")
flags.DEFINE_enum("init", "he_normal", ["he_normal", "glorot_uniform"],
                  "Initialization: the paper's he_normal or Keras' glorot_uniform.")
flags.DEFINE_bool("use_bias", False, "Biases in the dense layers (the paper: none).")
flags.DEFINE_float("coarse_dx", 0.5, "Step of x in c = 2^x for the first sweep.",
                   lower_bound=1e-3)
flags.DEFINE_float("dx", 0.1, "Step of x inside the brackets of the critical values.",
                   lower_bound=1e-3)
flags.DEFINE_float("x_max", 6.0, "Largest x tried if nothing diverges.", lower_bound=0)
flags.DEFINE_float("divergence", 1e3, "Loss / initial loss that counts as divergence.",
                   lower_bound=1)
flags.DEFINE_list("seeds", ["0"], "Seeds: each sets the initialization, the class-balanced "
                  "training subset, the batches and the Lanczos start; every (depth, width) "
                  "runs once per seed.")
flags.DEFINE_integer("workers", 2, "Parallel worker processes.", lower_bound=1)
flags.DEFINE_string("shard", "0/1", "i/n: run every n-th configuration from the i-th.")
flags.DEFINE_string("out", "runs/phase_diagram", "Output folder.")
flags.DEFINE_string("runs_table", "", "Print every c of this runs.jsonl (one written by an "
                    "earlier sweep, e.g. committed beside the results) as a table, then the "
                    "critical values of every finished configuration (sweep complete by "
                    "--dx and --x_max), and stop.")
FLAGS = flags.FLAGS

CRITICAL = ("c_loss", "c_sharp", "c_max", "c_barrier")


# ------------------------------------------------------------- definitions


def exceeds_loss(r):
  return r["diverged"] or max(r["losses"]) > r["loss0"]


def exceeds_sharpness(r):
  return r["diverged"] or max(r["sharpness"]) > r["lambda0"]


def has_barrier(r):
  return r["diverged"] or r["interpolation_max"] > r["loss0"]


PREDICATES = {"c_loss": exceeds_loss, "c_sharp": exceeds_sharpness,
              "c_max": lambda r: r["diverged"], "c_barrier": has_barrier}


def critical_values(records):
  """The four critical c of one (depth, width) with their brackets: c_loss,
  c_sharp and c_barrier lie in (``<name>_lo``, c] (``_lo`` the largest c
  tried below), c_max in [c_max, ``c_max_hi``) (the first diverging c)."""
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


def seeds_flag(values):
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    seeds = []
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise app.UsageError(f"--seeds must be distinct integers >= 0, got {','.join(values)!r}")
  return seeds


def pinned(row, name):
  """Whether a seed's critical value was found, not just bounded: without a
  divergence up to x_max, c_max (and c_barrier, which then defaults to it)
  is only a lower bound."""
  if row[name] is None:
    return False
  if row["c_max_hi"] is not None or name in ("c_loss", "c_sharp"):
    return True
  return name == "c_barrier" and not from_c_max(row)


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
                        standardize=opts["standardize"], seed=opts["seed"])
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
  """The settings a record was made with (a rerun with others starts anew)."""
  return {k: opts[k] for k in ("dataset", "init", "use_bias", "standardize",
                               "train_size", "batch_size", "steps", "hessian_size",
                               "divergence", "seed")}


def run_configuration(job):
  """All c of one (depth, width, seed), resuming from the records in ``path``."""
  depth, width, opts, path = job["depth"], job["width"], job["opts"], job["path"]
  done = {r["x"]: r for r in read_records(path, opts)
          if (r["depth"], r["width"]) == (depth, width)}
  config = None

  def run(x):
    nonlocal config
    if round(x, 6) in done:
      return done[round(x, 6)]
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():  # the driver was killed
      sys.exit(f"depth {depth} width {width}: the driver is gone; stopping")
    if config is None:
      config = Configuration(depth, width, opts)
    record = config.run(x)
    append(path, record)
    done[record["x"]] = record
    print(f"{time.strftime('%H:%M:%S')} depth {depth} width {width} seed {opts['seed']} "
          f"c {record['c']:.3g}: {phase_of(record)}",
          flush=True)
    return record

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


def read_records(path, opts):
  """The finished c values made with these settings (a half-written last
  line, left by a kill, is skipped)."""
  from tf_sharpness import rundir  # pylint: disable=g-import-not-at-top
  return [r for r in rundir.read_metrics(path) if r.get("protocol") == protocol(opts)]


def append(path, record):
  with open(path, "a") as f:  # one line per c, flushed at once
    f.write(json.dumps(record) + "\n")


def print_runs_table(path):
  """One line per c: what decides its phase (largest loss and lambda_t in
  the 10 steps against loss_0 and lambda_0, the interpolation's maximum)."""
  from tf_sharpness import rundir  # pylint: disable=g-import-not-at-top
  try:
    records = rundir.read_metrics(path)
  except (OSError, rundir.RunDirError) as e:
    raise app.UsageError(f"--runs_table={path}: {e}") from None
  needed = {"depth", "width", "x", "c", "lambda0", "loss0", "losses", "sharpness",
            "interpolation_max", "diverged"}
  if not records or not all(needed <= r.keys() for r in records):
    raise app.UsageError(f"--runs_table={path}: not a runs.jsonl of this script (each line "
                         f"needs {', '.join(sorted(needed))})")
  settings = {json.dumps({k: v for k, v in r.get("protocol", {}).items() if k != "seed"},
                        sort_keys=True) for r in records}
  if len(settings) > 1:
    raise app.UsageError(f"--runs_table={path}: holds runs made with {len(settings)} "
                         "different settings (protocols); give one sweep's runs.jsonl")
  print("| depth | width | seed | x | c | lambda_0 | loss_0 | largest loss | largest lambda_t | "
        "interpolation max | phase |")
  print("| --- " * 11 + "|")
  key = lambda r: (r["depth"], r["width"], seed_of(r))
  for r in sorted(records, key=lambda r: (*key(r), r["x"])):
    top = lambda v: "—" if r["diverged"] or not v else f"{max(v):.4g}"
    interpolation = [] if r["interpolation_max"] is None else [r["interpolation_max"]]
    print(f"| {r['depth']} | {r['width']} | {seed_of(r)} | {r['x']:g} | {r['c']:.3f} | "
          f"{r['lambda0']:.1f} | {r['loss0']:.3f} | {top(r['losses'])} | "
          f"{top(r['sharpness'])} | {top(interpolation)} | {phase_of(r)} |")
  groups = {}
  for r in records:
    groups.setdefault(key(r), []).append(r)
  print()
  complete = {k: finished(groups[k], FLAGS.coarse_dx, FLAGS.dx, FLAGS.x_max) for k in groups}
  print_critical_table([critical_values(groups[k]) for k in sorted(groups) if complete[k]])
  for depth, width, seed in sorted(k for k in groups if not complete[k]):
    print(f"depth {depth} width {width} seed {seed}: unfinished (no divergence up to "
          f"--x_max={FLAGS.x_max:g} in steps of --coarse_dx={FLAGS.coarse_dx:g}, or brackets "
          f"not refined to --dx={FLAGS.dx:g}); left out of the critical values")


def finished(records, coarse_dx, dx, x_max):
  """Whether a configuration's sweep is complete, as the driver ends it: a c
  diverged or the coarse sweep's next step would pass x_max, and every
  bracket is refined to dx."""
  last = max(r["x"] for r in records)
  done = any(r["diverged"] for r in records) or last + coarse_dx > x_max + 1e-9
  return done and not refinement(records, dx)


def print_critical_table(rows):
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
    return fmt(row[name]) + bracket
  print("| depth | width | seed | lambda_0 | " + " | ".join(CRITICAL) + " |")
  print("| --- " * (4 + len(CRITICAL)) + "|")
  for row in rows:
    print(f"| {row['depth']} | {row['width']} | {row['seed']} | {row['lambda0']:.1f} | "
          + " | ".join(cell(row, name) for name in CRITICAL) + " |")
  table = across_seeds(rows)
  if all(len(t["seeds"]) == 1 for t in table.values()):
    return
  print()
  print("| depth | width | seeds | lambda_0: mean (range) | "
        + " | ".join(f"{name}: mean (range)" for name in CRITICAL) + " |")
  # (a c_max without a divergence up to x_max is a lower bound, not averaged)
  print("| --- " * (4 + len(CRITICAL)) + "|")
  for (depth, width), t in table.items():
    lam = t["lambda0"]
    n = len(t["seeds"])
    cells = [f"{fmt(mean)} ({fmt(lo)}–{fmt(hi)})"
             + (f", {len(values)} of {n} seeds" if len(values) < n else "") if values else "—"
             for values, mean, lo, hi in (t[name] for name in CRITICAL)]
    print(f"| {depth} | {width} | {len(t['seeds'])} | {sum(lam) / len(lam):.1f} "
          f"({min(lam):.1f}–{max(lam):.1f}) | " + " | ".join(cells) + " |")


def main(argv):
  del argv
  if FLAGS.runs_table:
    print_runs_table(FLAGS.runs_table)
    return
  try:
    i, n = (int(v) for v in FLAGS.shard.split("/"))
  except ValueError:
    raise app.UsageError(f"--shard must be i/n (integers), got {FLAGS.shard!r}") from None
  if not 0 <= i < n:
    raise app.UsageError(f"--shard must be i/n with 0 <= i < n, got {FLAGS.shard}")
  seeds = seeds_flag(FLAGS.seeds)
  configs = [(int(d), int(w), s) for d in FLAGS.depths for w in FLAGS.widths
             for s in seeds][i::n]
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.join(FLAGS.out, "runs.jsonl")
  opts = {k: FLAGS[k].value for k in ("dataset", "init", "use_bias", "standardize",
                                      "train_size", "batch_size", "steps", "coarse_dx",
                                      "dx", "x_max", "divergence", "hessian_size")}
  jobs = [{"depth": d, "width": w, "opts": dict(opts, seed=s), "path": path}
          for d, w, s in configs]
  print(f"{len(configs)} configurations on {FLAGS.workers} workers; finished c "
        f"values in {path} are reused", flush=True)
  done = {}
  ctx = multiprocessing.get_context("spawn")
  # SIGTERM (kill, pkill) leaves through the `with`, which terminates the workers.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
  with ctx.Pool(min(FLAGS.workers, len(jobs))) as pool:
    for records in pool.imap_unordered(run_configuration, jobs):
      row = critical_values(records)
      done[(row["depth"], row["width"], row["seed"])] = records
      print(f"depth {row['depth']} width {row['width']} seed {row['seed']}: {row}",
            flush=True)
  rows = [critical_values(done[c]) for c in configs]
  with open(os.path.join(FLAGS.out, "phase.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  records = [r for c in configs for r in done[c]]
  write_summary(records, FLAGS.out)
  plot(rows, records, os.path.join(FLAGS.out, "phase.png"))
  print_critical_table(rows)


def write_summary(records, out):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_sharpness import summary  # pylint: disable=g-import-not-at-top
  with tf.summary.create_file_writer(out).as_default():
    summary.phase_diagram("phase_diagram", [
        {"c": r["c"], "width": r["width"], "depth": r["depth"], "seed": seed_of(r),
         "phase": phase_of(r)}
        for r in records], step=0)


def plot(rows, records, path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tf_sharpness import plotting  # pylint: disable=g-import-not-at-top
  plt = plotting.pyplot()
  if plt is None:
    return
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
  print(f"plot: {path}")


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
