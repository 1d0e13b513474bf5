r"""One run's sharpness trajectory: a table, its summary and a plot.

Reads the ``metrics.jsonl`` that ``train.py`` (or any driver) wrote in a run
directory, prints every measurement (epoch, step, training loss, lambda_max,
the optimizer's stability thresholds such as 2/eta, test accuracy) as a
markdown table, then the summary of ``tf_sharpness.trajectory`` (start, peak,
late level, lambda_max at a training loss) and, with --plot, draws lambda_max
and the training loss against epochs with the thresholds dashed.

  python scripts/trajectory_report.py --logdir=runs/reproductions/resnet32 \
      --loss_threshold=1.5 --plot=docs/results/resnet32.png

Needs matplotlib for the plot (pip install -e ".[experiments]").
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness import plotting  # noqa: E402
from tf_sharpness import rundir  # noqa: E402
from tf_sharpness import trajectory  # noqa: E402

flags.DEFINE_string("logdir", None, "Run directory holding metrics.jsonl.", required=True)
flags.DEFINE_float("loss_threshold", 1.5,
                   "Training loss at which lambda_max is reported (the equal-loss point).")
flags.DEFINE_string("plot", "", "PNG path of the plot (none when empty).")
flags.DEFINE_string("json", "", "Path to write the summary as JSON (none when empty).")
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


def steps_per_epoch(records: list[dict]) -> float | None:
  """From the records' own (step, epoch) pairs; None when no record says
  (a run that has only logged step 0): the report then counts in steps."""
  for r in records:
    if r.get("epoch"):
      return r["step"] / r["epoch"]
  return None


def thresholds(records: list[dict]) -> dict[str, float]:
  return next((r["stability_thresholds"] for r in reversed(records)
               if r.get("stability_thresholds")), {})


def _fmt(v, p):
  return "—" if v is None else f"{v:.{p}f}"


def print_table(records: list[dict], per_epoch: float | None, names: list[str]) -> None:
  print("| epoch | step | train loss | lambda_max | " + " | ".join(names)
        + (" | " if names else "") + "test accuracy |")
  print("| --- " * (5 + len(names)) + "|")
  for r in records:
    if not r.get("top_eigenvalues"):
      continue
    limits = [_fmt(r.get("stability_thresholds", {}).get(n), 1) for n in names]
    epoch = None if per_epoch is None else r["step"] / per_epoch
    print(f"| {_fmt(epoch, 2)} | {r['step']} | {_fmt(r.get('train_loss'), 3)} | "
          f"{r['top_eigenvalues'][0]:.1f} | " + "".join(f"{x} | " for x in limits)
          + f"{_fmt(r.get('test_accuracy'), 3)} |")


def print_summary(s: dict) -> None:
  at = s["lambda_max_at_loss_threshold"]
  if at is not None:
    reached = f"{at:.1f} at step {s['step_at_loss_threshold']}"
  elif all(l is None for l in s["train_loss"]):
    reached = "the training loss was never measured (train with --eval_every > 0)"
  else:
    reached = "not reached"
  where = (f"epoch {s['peak_epoch']:.2f}" if s["peak_epoch"] is not None
           else f"step {s['peak_step']}")
  after = ("below it for the last quarter of the run" if s["peaked"]
           else "within the last quarter of the run: not a peak yet")
  print(f"\nlambda_max: start {s['initial_lambda_max']:.1f}, peak "
        f"{s['peak_lambda_max']:.1f} at {where} ({after}), late mean "
        f"{s['late_mean_lambda_max']:.1f}; at training loss {FLAGS.loss_threshold:g}: "
        f"{reached}; final train loss {_fmt(s['final_train_loss'], 3)}, "
        f"test accuracy {_fmt(s['test_accuracy'], 3)}"
        + ("; DIVERGED" if s["diverged"] else ""))


def plot(s: dict, limits: dict[str, float], path: str) -> None:
  """lambda_max and the training loss against epochs; the thresholds are
  those of the last measurement (a learning-rate schedule moves them)."""
  plt = plotting.pyplot()
  if plt is None:
    return
  fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
  x, x_label = (s["epochs"], "epoch") if s["epochs"] is not None else (s["steps"], "step")
  ax.plot(x, s["lambda_max"], "o-", markersize=3, label="λ_max")
  for i, (name, value) in enumerate(limits.items()):
    ax.axhline(value, color=f"C{i + 1}", linestyle="--", label=f"{name} = {value:.3g}")
  ax.set_xlabel(x_label)
  ax.set_ylabel("λ_max")
  ax.set_title(os.path.basename(os.path.normpath(FLAGS.logdir)))
  ax.legend(fontsize=8)
  pts = [(e, l) for e, l in zip(x, s["train_loss"]) if l is not None]
  if pts:
    ax_loss.plot(*zip(*pts), "o-", markersize=3, color="C3")
  ax_loss.axhline(FLAGS.loss_threshold, color="k", linestyle=":", linewidth=1)
  ax_loss.set_xlabel(x_label)
  ax_loss.set_ylabel("training loss")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"plot: {path}")


def check_output(flag: str, path: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  if path and not os.path.isdir(folder):
    raise app.UsageError(f"--{flag}={path}: the folder {folder} does not exist")


def main(argv):
  del argv
  check_output("plot", FLAGS.plot)
  check_output("json", FLAGS.json)
  records = read_run(FLAGS.logdir)
  per_epoch = steps_per_epoch(records)
  summary = trajectory.summarize(records, per_epoch, FLAGS.loss_threshold)
  limits = thresholds(records)
  print_table(records, per_epoch, list(limits))
  print_summary(summary)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump({"logdir": FLAGS.logdir, "loss_threshold": FLAGS.loss_threshold,
                 "stability_thresholds": limits, **summary}, f)
  if FLAGS.plot:
    plot(summary, limits, FLAGS.plot)


if __name__ == "__main__":
  app.run(main)
