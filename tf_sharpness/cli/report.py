r"""Any experiment's output, or one run's sharpness trajectory.

``tf-sharpness report FILE`` prints the tables of the JSON any experiment
wrote (``tf_sharpness.experiments.results`` tells which), with no settings
typed again; --windows, --loss_levels and --at_steps refine them.

With --logdir (or --from_json, a --json it wrote) it reports one run: every
measurement as a table, the summary of ``tf_sharpness.reports.trajectory``,
--windows (stretches of the run), where lambda_max first reaches each
threshold and the loss each of --loss_levels, --compare with an earlier
run, and with --plot lambda_max and the loss against epochs.  The inputs are
``tf_sharpness.reports.trajectory_sources``, the tables ``trajectory_tables``.

  tf-sharpness report docs/results/edge_quantities_lr0.01.json
  tf-sharpness report --logdir=runs/reproductions/sharpness/lr0.001_b128_seed0 \
      --windows=385:400,400:440 --loss_levels=1.0,0.5 --plot=lambda_max.png

Needs matplotlib for the plot (pip install -e ".[experiments]").
"""

import json
import os

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as tf_flags  # noqa: E402
from tf_sharpness.errors import ConfigError  # noqa: E402
from tf_sharpness.experiments import results, sweep  # noqa: E402
from tf_sharpness.reports import trajectory_sources as sources  # noqa: E402
from tf_sharpness.reports import trajectory_tables as T  # noqa: E402

flags.DEFINE_string("logdir", "", "Run directory holding metrics.jsonl.")
flags.DEFINE_string("from_json", "", "Instead of --logdir: a --json this script wrote.")
flags.DEFINE_float("loss_threshold", 1.5,
                   "Training loss at which lambda_max is reported (the equal-loss point).")
flags.DEFINE_string("plot", "", "PNG path of the plot (none when empty).")
flags.DEFINE_string("json", "", "Path to write the summary as JSON (none when empty).")
flags.DEFINE_float("until_epoch", None,
                   "Read the run only up to this epoch (the start of a longer run).")
tf_flags.define_list("windows", "windows", "Stretches A:B (epochs, or steps when the run "
                     "has no epochs) to tabulate, e.g. 100:150,150:200.")
tf_flags.define_list("loss_levels", "loss_levels",
                     "Training losses, decreasing: the first epoch at each.")
tf_flags.define_list("steps", "at_steps", "With FILE of eos: steps at which to give "
                     "lambda_max and the loss.")
flags.DEFINE_string("compare", "", "A --json of an earlier run of the same setting (or a "
                    "sweep's JSON holding it: the run whose folder name RUN_seedS "
                    "matches): the largest relative difference of lambda_max at the "
                    "steps both measured.")
FLAGS = flags.FLAGS


def report_file(path: str) -> bool:
  """FILE: whichever experiment wrote it, its tables; False for a
  trajectory summary (reported as --from_json)."""
  try:
    data = results.load(path)
    kind = results.identify(data)
  except (OSError, ValueError) as e:
    raise app.UsageError(f"{path}: {e}") from None
  if kind == "trajectory":
    return False
  print(results.report(data, windows=FLAGS.windows, loss_levels=FLAGS.loss_levels,
                       at_steps=FLAGS.at_steps))
  return True


def source() -> sources.Source:
  if bool(FLAGS.logdir) == bool(FLAGS.from_json):
    raise app.UsageError("give one of --logdir (a run directory) or --from_json (a --json "
                         "this script wrote)")
  if FLAGS.logdir:
    return sources.from_run(FLAGS.logdir, FLAGS.until_epoch)
  if FLAGS.until_epoch is not None:
    raise ConfigError("`until_epoch` reads a run directory: use it with `logdir`, "
                      "not `from_json`")
  return sources.from_summary_json(tf_flags.json_from_flag("from_json", FLAGS.from_json),
                                   FLAGS.from_json)


def main(argv):
  if len(argv) > 2:
    raise app.UsageError(f"one FILE at most, got {argv[1:]}")
  if len(argv) == 2:
    if report_file(argv[1]):
      return
    FLAGS.from_json = argv[1]
  for flag in ("plot", "json"):
    folder = os.path.dirname(os.path.abspath(FLAGS[flag].value or "."))
    if FLAGS[flag].value and not os.path.isdir(folder):
      raise app.UsageError(f"--{flag}={FLAGS[flag].value}: the folder {folder} does not exist")
  run = source()
  print(T.measurements_table(run.records, run.per_epoch, list(run.thresholds)))
  summary, limits = run.summary(FLAGS.loss_threshold), run.thresholds
  name = os.path.basename(os.path.normpath(summary.get("logdir") or FLAGS.logdir))
  compared = None
  if FLAGS.compare:  # read before anything is printed below
    other = tf_flags.json_from_flag("compare", FLAGS.compare)
    if isinstance(other, dict) and other.get("experiment") == sweep.EXPERIMENT:
      other = other.get("results") or []  # a sweep's JSON: its run called `name`
    compared = sources.compared(other, FLAGS.compare, name)
  print("\n" + T.summary_line(summary, FLAGS.loss_threshold))
  stats = []
  if FLAGS.windows:
    text, stats = T.windows_table(summary, FLAGS.windows, limits, run.wall_times)
    print("\n" + text)
  crossings = T.crossings_text(summary, limits, FLAGS.loss_levels)
  if crossings:
    print("\n" + crossings)
  if compared is not None:
    print("\n" + T.comparison_line(summary, compared, FLAGS.compare))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(sources.summary_json(summary, FLAGS.loss_threshold, limits, stats), f)
  if FLAGS.plot and T.figure(summary, limits, FLAGS.plot, name, FLAGS.loss_threshold):
    print(f"plot: {FLAGS.plot}")


def run() -> None:
  tf_flags.run(main, __name__)


if __name__ == "__main__":
  run()
