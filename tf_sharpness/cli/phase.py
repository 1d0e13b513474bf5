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
largest c tried below it); --x_values runs a given grid of x instead.
Every c is appended to OUT/runs.jsonl as soon as it is done: rerunning
the same command continues where it stopped.  --runs_table --horizon=T
reads the runs as if they had stopped after T steps.
A configuration is one (depth, width, seed); with several --seeds the
critical values are also printed as their mean and range over the seeds,
and the plot draws the mean with the range as error bars.  Configurations
run in parallel worker processes (--workers); --shard=i/n takes every n-th
configuration.  Writes OUT/phase.csv (a row per configuration), a plot and
the phase_diagram summary for the Spectrum tab.

    python scripts/phase.py --dataset=../shared/data/cifar10-jpeg.tar.gz \\
        --depths=7 --widths=256,512,1024 --out=runs/phase_paper
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.experiments import phase  # noqa: E402

flags_lib.define_settings_flags(phase.Settings)
flags.DEFINE_string("runs_table", "", "Print every c of this runs.jsonl (one written by an "
                    "earlier sweep, e.g. committed beside the results) as a table, then the "
                    "critical values of every finished configuration (sweep complete by "
                    "--dx and --x_max, or --x_values), and stop.")
flags.DEFINE_integer("horizon", None, "With --runs_table: the critical values as if every "
                     "run had stopped after this many steps (at most the runs' --steps; "
                     "c_barrier is then not known).", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  settings = flags_lib.settings_from_flags(phase.Settings)
  if FLAGS.horizon is not None and not FLAGS.runs_table:
    raise app.UsageError("--horizon reads the runs of --runs_table; give --runs_table")
  if FLAGS.runs_table:
    try:
      records = phase.RunStore(FLAGS.runs_table).read_one_sweep()
    except (OSError, ValueError) as e:
      raise app.UsageError(f"--runs_table={FLAGS.runs_table}: {e}") from None
    steps = {r.get("protocol", {}).get("steps") for r in records} - {None}
    if FLAGS.horizon is not None and any(FLAGS.horizon > s for s in steps):
      raise app.UsageError(f"--horizon={FLAGS.horizon} is longer than the runs "
                           f"(--steps={max(steps)}); give at most that")
    if FLAGS.horizon is not None:
      print(f"(every run read up to step {FLAGS.horizon})")
      shown = [phase.at_horizon(r, FLAGS.horizon) for r in records]
    else:
      shown = records
    print(phase.runs_table(shown) + "\n\n"
          + phase.finished_table(records, settings, FLAGS.horizon))
    return
  print(f"{len(settings.configurations())} configurations on {settings.workers} workers; "
        f"finished c values in {os.path.join(settings.out, 'runs.jsonl')} are reused",
        flush=True)
  # SIGTERM (kill, pkill) leaves through phase.run's pool, which terminates the workers.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
  rows, records = phase.run(settings, on_configuration=lambda row: print(
      f"depth {row['depth']} width {row['width']} seed {row['seed']}: {row}", flush=True))
  plot = phase.write_outputs(rows, records, settings.out)
  if plot:
    print(f"plot: {plot}")
  print(phase.critical_table(rows))


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
