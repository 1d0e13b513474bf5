r"""Seed by seed: the runs of a sweep that ``sharpness_vs_lr_batch.py`` wrote
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
from tf_sharpness.experiments import lr_batch_sweep  # noqa: E402
from tf_sharpness.reports import tables  # noqa: E402
from tf_sharpness.reports import trajectory  # noqa: E402

flags.DEFINE_string("json", None, "The --json of sharpness_vs_lr_batch.py.", required=True)
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
  sweep = tf_flags.json_from_flag("json", path)
  if not isinstance(sweep, list) or not all(
      isinstance(s, dict) and {"run", "learning_rate", "runs"} <= s.keys() for s in sweep):
    raise app.UsageError(f"--json={path}: not a --json of sharpness_vs_lr_batch.py "
                         "(a list of settings with 'run', 'learning_rate' and 'runs')")
  return sweep


def chosen(sweep: list[dict], names: list[str]) -> list[dict]:
  known = [s["run"] for s in sweep]
  unknown = [n for n in names if n not in known]
  if unknown:
    raise app.UsageError(f"--runs={','.join(names)}: no setting {', '.join(unknown)} in "
                         f"--json (it has {', '.join(known)})")
  return [s for s in sweep if not names or s["run"] in names]


_fmt = tables.fixed


def _unit(run: dict) -> str:
  return "epoch" if run.get("epochs") is not None else "step"


def at_level(run: dict, level: float) -> str:
  """'x (loss, lambda_max)' of the first measurement at loss <= level."""
  i = trajectory.by_loss(run, [level])["index_at_level"][0]
  if i is None:
    return "never"
  return (f"{trajectory.x_values(run)[i]:g} ({run['train_loss'][i]:.3f}, "
          f"{run['lambda_max'][i]:.1f})")


def print_runs(sweep: list[dict], levels: list[float]) -> None:
  print(tables.header(
      ["run", "eta", "B", "seed", "start", "largest lambda_max", "at", "peaked", "late mean",
       "final train loss", "test accuracy", "diverged",
       *(f"first loss <= {l:g}: at (loss, lambda_max)" for l in levels)]))
  for s in sweep:
    for r in s["runs"]:
      at = r["peak_epoch"] if r.get("peak_epoch") is not None else r["peak_step"]
      print(f"| {s['run']} | {s['learning_rate']:g} | {s['batch_size']} | {r['seed']} | "
            f"{r['initial_lambda_max']:.1f} | {r['peak_lambda_max']:.1f} | {_unit(r)} {at:g} | "
            f"{'yes' if r['peaked'] else 'no'} | {r['late_mean_lambda_max']:.1f} | "
            f"{_fmt(r['final_train_loss'], 3)} | {_fmt(r['test_accuracy'], 3)} | "
            f"{'yes' if r.get('diverged') else 'no'} |"
            + "".join(f" {at_level(r, l)} |" for l in levels))


def print_bands(sweep: list[dict], levels: list[float]) -> None:
  bands = list(zip(levels, levels[1:]))
  print("\n" + tables.header(["run", "seed", *(f"band ({lo:g}, {hi:g}]: mean (measurements)"
                                               for hi, lo in bands)]))
  for s in sweep:
    for r in s["runs"]:
      b = trajectory.by_loss(r, levels)
      print(f"| {s['run']} | {r['seed']} |" + "".join(
          f" {_fmt(m, 1)} ({n}) |" for m, n in zip(b["band_mean"], b["band_count"])))


def print_measurements(sweep: list[dict]) -> None:
  print("\n" + tables.header(["run", "seed", "epoch or step", "train loss", "lambda_max"]))
  for s in sweep:
    for r in s["runs"]:
      for x, loss, top in zip(trajectory.x_values(r), r["train_loss"], r["lambda_max"]):
        print(f"| {s['run']} | {r['seed']} | {_unit(r)} {x:g} | {_fmt(loss, 3)} | {top:.1f} |")


def print_windows(sweep: list[dict], windows: list[tuple[float, float]]) -> None:
  print("\n" + tables.header(["run", "seed", "window", "measurements", "mean lambda_max",
                              "range", "above 2/eta", "slope per epoch or step",
                              "mean train loss"]))
  for s in sweep:
    limit = {"2/eta": 2 / s["learning_rate"]}
    for r in s["runs"]:
      for a, b in windows:
        w = trajectory.window(r, a, b, limit)
        print(f"| {s['run']} | {r['seed']} | {_unit(r)}s {a:g}–{b:g} | {w['count']} | "
              f"{_fmt(w['mean'], 1)} | {tables.span(w['min'], w['max'])} | "
              f"{w['above']['2/eta']} | {tables.slope(w['slope'])} | "
              f"{_fmt(w['mean_train_loss'], 3)} |")


def main(argv):
  del argv
  windows, levels = FLAGS.windows, FLAGS.loss_levels
  sweep = chosen(read_sweep(FLAGS.json), FLAGS.runs)
  if FLAGS.in_steps:
    for s in sweep:
      s["runs"] = [{**r, "epochs": None, "peak_epoch": None} for r in s["runs"]]
  print_runs(sweep, levels)
  if len(levels) > 1:
    print_bands(sweep, levels)
  stored = [s.get("by_loss", {}).get("levels") for s in sweep]
  if stored and stored[0] and all(l == stored[0] for l in stored):
    # the driver's equal-loss table, at the levels the sweep was run with,
    # with each ratio's 95% interval over seeds
    print("\n" + lr_batch_sweep.loss_table(sweep, stored[0]))
  if windows:
    print_windows(sweep, windows)
  if FLAGS.measurements:
    print_measurements(sweep)


def run() -> None:
  tf_flags.run(main, __name__)


if __name__ == "__main__":
  run()
