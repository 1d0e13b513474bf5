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
import multiprocessing
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.experiments import phase_diagram  # noqa: E402
from tf_sharpness.experiments.phase_diagram import across_seeds, critical_values  # noqa: E402
from tf_sharpness.experiments.phase_diagram import CRITICAL, phase_of, seed_of  # noqa: E402

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


def seeds_flag(values):
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    seeds = []
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise app.UsageError(f"--seeds must be distinct integers >= 0, got {','.join(values)!r}")
  return seeds


def run_configuration(job):
  """One worker's job: every c of one (depth, width, seed), each printed
  when done; stops when the driver is gone."""
  depth, width, seed = job["depth"], job["width"], job["opts"]["seed"]

  def driver_alive():
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():  # the driver was killed
      sys.exit(f"depth {depth} width {width}: the driver is gone; stopping")

  def show(record):
    print(f"{time.strftime('%H:%M:%S')} depth {depth} width {width} seed {seed} "
          f"c {record['c']:.3g}: {phase_of(record)}", flush=True)

  return phase_diagram.sweep(depth, width, job["opts"], phase_diagram.RunStore(job["path"]),
                             on_record=show, before_run=driver_alive)


def print_runs_table(path):
  """Every c of a runs.jsonl, then the critical values of every finished
  configuration (sweep complete by --dx and --x_max)."""
  try:
    records = phase_diagram.RunStore(path).read_one_sweep()
  except (OSError, ValueError) as e:
    raise app.UsageError(f"--runs_table={path}: {e}") from None
  print(phase_diagram.runs_table(records))
  groups = phase_diagram.by_configuration(records)
  complete = {k: phase_diagram.finished(groups[k], FLAGS.coarse_dx, FLAGS.dx, FLAGS.x_max)
              for k in groups}
  print()
  print(phase_diagram.critical_table(
      [phase_diagram.critical_values(groups[k]) for k in sorted(groups) if complete[k]]))
  for depth, width, seed in sorted(k for k in groups if not complete[k]):
    print(f"depth {depth} width {width} seed {seed}: unfinished (no divergence up to "
          f"--x_max={FLAGS.x_max:g} in steps of --coarse_dx={FLAGS.coarse_dx:g}, or brackets "
          f"not refined to --dx={FLAGS.dx:g}); left out of the critical values")


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
  print(phase_diagram.critical_table(rows))


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
  from tf_sharpness.reports import plotting  # pylint: disable=g-import-not-at-top
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
