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
  records = rundir.read_metrics(path)
  if not any(r.get("top_eigenvalues") for r in records):
    raise app.UsageError(f"--logdir={logdir}: no lambda_max was measured in this run "
                         "(train with --spectrum_every > 0)")
  return records


def steps_per_epoch(records: list[dict]) -> float:
  """From the records' own (step, epoch) pairs."""
  for r in records:
    if r.get("epoch"):
      return r["step"] / r["epoch"]
  raise app.UsageError(f"--logdir={FLAGS.logdir}: no record past epoch 0")


def thresholds(records: list[dict]) -> dict[str, float]:
  return next((r["stability_thresholds"] for r in reversed(records)
               if r.get("stability_thresholds")), {})


def print_table(records: list[dict], per_epoch: float) -> None:
  names = list(thresholds(records))
  print("| epoch | step | train loss | lambda_max | " + " | ".join(names)
        + (" | " if names else "") + "test accuracy |")
  print("| --- " * (5 + len(names)) + "|")
  fmt = lambda v, p: "—" if v is None else f"{v:.{p}f}"
  for r in records:
    if not r.get("top_eigenvalues"):
      continue
    limits = [fmt(r.get("stability_thresholds", {}).get(n), 1) for n in names]
    print(f"| {r['step'] / per_epoch:.2f} | {r['step']} | {fmt(r.get('train_loss'), 3)} | "
          f"{r['top_eigenvalues'][0]:.1f} | " + "".join(f"{x} | " for x in limits)
          + f"{fmt(r.get('test_accuracy'), 3)} |")


def print_summary(s: dict) -> None:
  at = s["lambda_max_at_loss_threshold"]
  reached = (f"{at:.1f} at step {s['step_at_loss_threshold']}" if at is not None
             else "not reached")
  print(f"\nlambda_max: start {s['initial_lambda_max']:.1f}, peak {s['peak_lambda_max']:.1f} "
        f"at epoch {s['peak_epoch']:.2f} ({'turned down after it' if s['peaked'] else 'still at its maximum at the last measurement'}), "
        f"late mean {s['late_mean_lambda_max']:.1f}; at training loss "
        f"{FLAGS.loss_threshold:g}: {reached}; final train loss "
        f"{s['final_train_loss']}, test accuracy {s['test_accuracy']}"
        + ("; DIVERGED" if s["diverged"] else ""))


def plot(s: dict, limits: dict[str, float], path: str) -> None:
  plt = plotting.pyplot()
  if plt is None:
    return
  fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
  ax.plot(s["epochs"], s["lambda_max"], "o-", markersize=3, label="λ_max")
  for i, (name, value) in enumerate(limits.items()):
    ax.axhline(value, color=f"C{i + 1}", linestyle="--", label=f"{name} = {value:.3g}")
  ax.set_xlabel("epoch")
  ax.set_ylabel("λ_max")
  ax.set_title(os.path.basename(os.path.normpath(FLAGS.logdir)))
  ax.legend(fontsize=8)
  pts = [(e, l) for e, l in zip(s["epochs"], s["train_loss"]) if l is not None]
  if pts:
    ax_loss.plot(*zip(*pts), "o-", markersize=3, color="C3")
  ax_loss.axhline(FLAGS.loss_threshold, color="k", linestyle=":", linewidth=1)
  ax_loss.set_xlabel("epoch")
  ax_loss.set_ylabel("training loss")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"plot: {path}")


def main(argv):
  del argv
  records = read_run(FLAGS.logdir)
  per_epoch = steps_per_epoch(records)
  summary = trajectory.summarize(records, per_epoch, FLAGS.loss_threshold)
  print_table(records, per_epoch)
  print_summary(summary)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump({"logdir": FLAGS.logdir, "loss_threshold": FLAGS.loss_threshold,
                 "stability_thresholds": thresholds(records), **summary}, f)
  if FLAGS.plot:
    plot(summary, thresholds(records), FLAGS.plot)


if __name__ == "__main__":
  app.run(main)
