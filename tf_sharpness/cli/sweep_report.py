r"""Seed by seed: the runs of a sweep that ``tf-sharpness sweep`` wrote
with --json, one row per run.

The driver prints mean +- std over seeds; a reader of the page also wants
each seed: where its lambda_max peaked (and whether it came down after:
``peaked``), its late mean, final training loss and test accuracy, and, with
--loss_levels, the first measurement at or below each training loss (its
epoch, the loss there and lambda_max there) and the mean of lambda_max over
the measurements between consecutive levels (``trajectory.by_loss``).  --windows tabulates stretches
of epochs of every run (``trajectory.window``: mean, range, count above
2/eta, least-squares slope, mean loss); --measurements lists every
measurement.  Everything is read from the JSON
(committed beside the results), so no run folder is needed.

  python scripts/sweep_report.py --json=docs/results/sharpness_lr_3seeds_150ep.json \
      --loss_levels=2.0,1.0 --windows=90:150
"""



from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as tf_flags  # noqa: E402
from tf_sharpness.experiments import sweep  # noqa: E402

flags.DEFINE_string("json", None, "The --json of tf-sharpness sweep.", required=True)
flags.DEFINE_list("runs", [], "Only these settings (their 'run' names, e.g. lr0.001_b128).")
tf_flags.define_list("loss_levels", "loss_levels", "Training losses, decreasing: each "
                     "run's first measurement at or below each.")
tf_flags.define_list("windows", "windows", "Stretches of epochs A:B to tabulate per run.")
flags.DEFINE_bool("in_steps", False, "Count windows and measurements in optimizer steps, "
                  "not epochs (the batch-size sweep compares runs at equal steps).")
flags.DEFINE_bool("measurements", False, "Also list every measurement of every run "
                  "(epoch, training loss, lambda_max).")
FLAGS = flags.FLAGS


def read_sweep(path: str) -> list[dict]:
  runs = sweep.results_of(tf_flags.json_from_flag("json", path))
  if runs is None:
    raise app.UsageError(f"--json={path}: not a --json of tf-sharpness sweep "
                         "(a list of settings with 'run', 'learning_rate' and 'runs')")
  return runs


def chosen(runs: list[dict], names: list[str]) -> list[dict]:
  known = [s["run"] for s in runs]
  unknown = [n for n in names if n not in known]
  if unknown:
    raise app.UsageError(f"--runs={','.join(names)}: no setting {', '.join(unknown)} in "
                         f"--json (it has {', '.join(known)})")
  return [s for s in runs if not names or s["run"] in names]


def main(argv):
  del argv
  windows, levels = FLAGS.windows, FLAGS.loss_levels
  runs = chosen(read_sweep(FLAGS.json), FLAGS.runs)
  if FLAGS.in_steps:
    for s in runs:
      s["runs"] = [{**r, "epochs": None, "peak_epoch": None} for r in s["runs"]]
  print(sweep.seeds_table(runs, levels))
  if len(levels) > 1:
    print("\n" + sweep.bands_table(runs, levels))
  stored = sweep.stored_levels(runs)
  if stored:  # the driver's equal-loss table, with each ratio's interval over seeds
    print("\n" + sweep.loss_table(runs, stored))
  if windows:
    print("\n" + sweep.windows_table(runs, windows))
  if FLAGS.measurements:
    print("\n" + sweep.measurements_table(runs))


def run() -> None:
  tf_flags.run(main, __name__)


if __name__ == "__main__":
  run()
