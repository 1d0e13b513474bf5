r"""Any experiment's output, or one run's sharpness trajectory.

``tf-sharpness report FILE`` prints the tables of the JSON any experiment
wrote (nsgd, step_length, eos, sweep, walk; a phase diagram's runs.jsonl;
``tf_sharpness.experiments.results`` tells which), with no settings typed
again; --windows, --loss_levels and --at_steps refine them where they apply.

Without FILE it reports one run's trajectory:

Reads the ``metrics.jsonl`` that ``train.py`` (or any driver) wrote in a run
directory, prints every measurement (epoch, step, training loss, lambda_max,
the optimizer's stability thresholds such as 2/eta, test accuracy) as a
markdown table, then the summary of ``tf_sharpness.reports.trajectory`` (start, peak,
late level, lambda_max at a training loss) and, with --plot, draws lambda_max
and the training loss against epochs with the thresholds dashed.

With --windows it tabulates stretches of the run (``trajectory.window``:
mean, range, count above each threshold, least-squares slope, mean loss and
HVPs per measurement, and the seconds per epoch from the event files' wall
times) and says where lambda_max first reaches each
threshold; --loss_levels says where the loss first gets to each level;
--compare measures how far a rerun is from an earlier run's --json;
--until_epoch reads only the start of a longer run.  --from_json=PATH
reports a --json this script wrote (committed beside a result) instead of
a run directory: everything but the seconds per epoch (and the test
accuracy before the last measurement).

  python scripts/report.py --logdir=runs/reproductions/resnet32 \
      --loss_threshold=1.5 --plot=docs/results/resnet32.png
  python scripts/report.py --logdir=runs/reproductions/sharpness/lr0.001_b128_seed0 \
      --windows=385:400,400:440,440:480 --loss_levels=1.0,0.5

Needs matplotlib for the plot (pip install -e ".[experiments]").
"""

import json
import os


from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as tf_flags  # noqa: E402
from tf_sharpness import rundir  # noqa: E402
from tf_sharpness.reports import trajectory  # noqa: E402
from tf_sharpness.reports import trajectory_tables as T  # noqa: E402
from tf_sharpness.experiments import sweep, results  # noqa: E402

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
                    "sharpness_vs_lr_batch.py --json holding it: the run whose folder name "
                    "RUN_seedS matches): the largest relative difference of lambda_max at "
                    "the steps both measured.")
FLAGS = flags.FLAGS


def read_run(logdir: str) -> list[dict]:
  path = os.path.join(logdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise app.UsageError(f"--logdir={logdir}: no metrics.jsonl there (is it a run directory?)")
  try:
    records = rundir.read_metrics(path)
  except rundir.RunDirError as e:
    raise app.UsageError(f"--logdir={logdir}: {e}") from None
  if not any(r.get("top_eigenvalues") for r in records):
    raise app.UsageError(f"--logdir={logdir}: no lambda_max was measured in this run "
                         "(train with --spectrum_every > 0)")
  return records


def until(records: list[dict], epoch: float | None, per_epoch: float | None) -> list[dict]:
  """The records up to ``epoch`` (all of them for None)."""
  if epoch is None:
    return records
  if per_epoch is None:
    raise app.UsageError(f"--until_epoch={epoch:g}: this run records no epochs")
  kept = [r for r in records if r["step"] <= epoch * per_epoch]
  if not any(r.get("top_eigenvalues") for r in kept):
    raise app.UsageError(f"--until_epoch={epoch:g}: no lambda_max was measured by then")
  return kept


def read_compared(path: str, flag: str = "compare", name: str = "") -> dict:
  """A --json of this report (read for --compare or --from_json), or, for
  --compare, the run called ``name`` (RUN_seedS) in a sweep's --json."""
  other = tf_flags.json_from_flag(flag, path)
  if flag == "compare" and isinstance(other, dict) and other.get(
      "experiment") == sweep.EXPERIMENT:
    other = other.get("results") or []  # a sweep's JSON: find the run in it
  if isinstance(other, list) and flag == "compare":
    runs = {f"{s.get('run')}_seed{r.get('seed')}": r for s in other if isinstance(s, dict)
            for r in s.get("runs", [])}
    if name not in runs:
      raise app.UsageError(f"--compare={path}: no run {name!r} in this sweep (it has "
                           f"{', '.join(sorted(runs)) or 'none'})")
    other = runs[name]
  if not isinstance(other, dict) or not {"steps", "lambda_max"} <= other.keys():
    raise app.UsageError(f"--{flag}={path}: not a --json of this report "
                         "(needs 'steps' and 'lambda_max')")
  return other


def check_output(flag: str, path: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  if path and not os.path.isdir(folder):
    raise app.UsageError(f"--{flag}={path}: the folder {folder} does not exist")


def from_run(logdir: str) -> tuple[dict, dict[str, float], dict]:
  """(summary, thresholds, event wall times) of a run directory, after
  printing its table of measurements."""
  records = read_run(logdir)
  per_epoch = T.steps_per_epoch(records)
  records = until(records, FLAGS.until_epoch, per_epoch)
  limits = T.thresholds(records)
  print(T.measurements_table(records, per_epoch, list(limits)))
  return (trajectory.summarize(records, per_epoch, FLAGS.loss_threshold), limits,
          rundir.event_wall_times(logdir))


def from_json(path: str) -> tuple[dict, dict[str, float], dict]:
  """The same from a --json of this script, summarized again (with this
  --loss_threshold).  No wall times (no events), the test accuracy of the
  last measurement only, and its last stability thresholds on every row."""
  if FLAGS.until_epoch is not None:
    raise app.UsageError("--until_epoch reads a run directory: use it with --logdir, "
                         "not --from_json")
  saved = read_compared(path, flag="from_json")
  missing = {"epochs", "train_loss", "stability_thresholds"} - saved.keys()
  if missing:
    raise app.UsageError(f"--from_json={path}: not a --json of this report (no "
                         f"{', '.join(sorted(missing))})")
  limits = saved["stability_thresholds"]
  matvecs = saved.get("matvecs") or [None] * len(saved["steps"])
  records = [{"step": step, "top_eigenvalues": [top], "train_loss": loss,
              "spectrum_matvecs": hvps, "stability_thresholds": limits}
             for step, top, loss, hvps in zip(saved["steps"], saved["lambda_max"],
                                              saved["train_loss"], matvecs)]
  records[-1].update(test_accuracy=saved.get("test_accuracy"), diverged=saved.get("diverged"))
  per_epoch = T.steps_per_epoch([{"step": st, "epoch": e} for st, e in
                                 zip(saved["steps"], saved["epochs"] or [])])
  print(T.measurements_table(records, per_epoch, list(limits)))
  summary = trajectory.summarize(records, per_epoch, FLAGS.loss_threshold)
  return {"logdir": saved.get("logdir"), **summary}, limits, {}


def report_file(path: str) -> None:
  """FILE: whichever experiment wrote it, its tables."""
  try:
    data = results.load(path)
    kind = results.identify(data)
  except (OSError, ValueError) as e:
    raise app.UsageError(f"{path}: {e}") from None
  if kind == "trajectory":
    FLAGS.from_json = path
    return None
  print(results.report(data, windows=FLAGS.windows, loss_levels=FLAGS.loss_levels,
                       at_steps=FLAGS.at_steps))
  return 0


def main(argv):
  if len(argv) > 2:
    raise app.UsageError(f"one FILE at most, got {argv[1:]}")
  if len(argv) == 2 and report_file(argv[1]) == 0:
    return 0
  if bool(FLAGS.logdir) == bool(FLAGS.from_json):
    raise app.UsageError("give one of --logdir (a run directory) or --from_json (a --json "
                         "this script wrote)")
  check_output("plot", FLAGS.plot)
  check_output("json", FLAGS.json)
  windows, levels = FLAGS.windows, FLAGS.loss_levels
  loss_threshold = FLAGS.loss_threshold
  summary, limits, wall = (from_run(FLAGS.logdir) if FLAGS.logdir
                           else from_json(FLAGS.from_json))
  name = os.path.basename(os.path.normpath(summary.get("logdir") or FLAGS.logdir))
  compared = read_compared(FLAGS.compare, name=name) if FLAGS.compare else None
  print("\n" + T.summary_line(summary, loss_threshold))
  stats = []
  if windows:
    text, stats = T.windows_table(summary, windows, limits, wall)
    print("\n" + text)
  crossings = T.crossings_text(summary, limits, levels)
  if crossings:
    print("\n" + crossings)
  if compared is not None:
    print("\n" + T.comparison_line(summary, compared, FLAGS.compare))
  if FLAGS.json:
    fields = {k: v for k, v in summary.items() if k != "logdir"}
    with open(FLAGS.json, "w") as f:
      json.dump({"logdir": summary.get("logdir", FLAGS.logdir), "loss_threshold": loss_threshold,
                 "stability_thresholds": limits, **fields, "windows": stats}, f)
  if FLAGS.plot and T.figure(summary, limits, FLAGS.plot, name, loss_threshold):
    print(f"plot: {FLAGS.plot}")


def run() -> None:
  tf_flags.run(main, __name__)


if __name__ == "__main__":
  run()
