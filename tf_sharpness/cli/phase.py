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

    python scripts/phase.py --dataset=../shared/data/cifar10-jpeg.tar.gz \\
        --depths=7 --widths=256,512,1024 --out=runs/phase_paper
"""

import multiprocessing
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.experiments import phase  # noqa: E402
from tf_sharpness.experiments.phase import critical_values, phase_of  # noqa: E402

flags_lib.define_settings_flags(phase.Settings)
flags.DEFINE_string("runs_table", "", "Print every c of this runs.jsonl (one written by an "
                    "earlier sweep, e.g. committed beside the results) as a table, then the "
                    "critical values of every finished configuration (sweep complete by "
                    "--dx and --x_max), and stop.")
FLAGS = flags.FLAGS


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

  return phase.sweep(depth, width, job["opts"], phase.RunStore(job["path"]),
                             on_record=show, before_run=driver_alive)


def print_runs_table(path, settings):
  """Every c of a runs.jsonl, then the critical values of every finished
  configuration (sweep complete by --dx and --x_max)."""
  try:
    records = phase.RunStore(path).read_one_sweep()
  except (OSError, ValueError) as e:
    raise app.UsageError(f"--runs_table={path}: {e}") from None
  print(phase.runs_table(records))
  groups = phase.by_configuration(records)
  complete = {k: phase.finished(groups[k], settings.coarse_dx, settings.dx,
                                        settings.x_max)
              for k in groups}
  print()
  print(phase.critical_table(
      [phase.critical_values(groups[k]) for k in sorted(groups) if complete[k]]))
  for depth, width, seed in sorted(k for k in groups if not complete[k]):
    print(f"depth {depth} width {width} seed {seed}: unfinished (no divergence up to "
          f"--x_max={settings.x_max:g} in steps of --coarse_dx={settings.coarse_dx:g}, or "
          f"brackets not refined to --dx={settings.dx:g}); left out of the critical values")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  settings = flags_lib.settings_from_flags(phase.Settings)
  if FLAGS.runs_table:
    print_runs_table(FLAGS.runs_table, settings)
    return
  configs = settings.configurations()
  os.makedirs(settings.out, exist_ok=True)
  path = os.path.join(settings.out, "runs.jsonl")
  jobs = [{"depth": d, "width": w, "opts": settings.opts(s), "path": path}
          for d, w, s in configs]
  print(f"{len(configs)} configurations on {settings.workers} workers; finished c "
        f"values in {path} are reused", flush=True)
  done = {}
  ctx = multiprocessing.get_context("spawn")
  # SIGTERM (kill, pkill) leaves through the `with`, which terminates the workers.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
  with ctx.Pool(min(settings.workers, len(jobs))) as pool:
    for records in pool.imap_unordered(run_configuration, jobs):
      row = critical_values(records)
      done[(row["depth"], row["width"], row["seed"])] = records
      print(f"depth {row['depth']} width {row['width']} seed {row['seed']}: {row}",
            flush=True)
  rows = [critical_values(done[c]) for c in configs]
  plot = phase.write_outputs(rows, [r for c in configs for r in done[c]],
                                     settings.out)
  if plot:
    print(f"plot: {plot}")
  print(phase.critical_table(rows))


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
