"""Edge of stability (Cohen et al. 2021): full-batch GD, sharpness vs 2/eta.

Runs the shipped flagfile edge_of_stability.cfg (tanh FCN 2x200, MSE, full batch)
for several learning rates (and heavy-ball momentum), then reports for each
run the late-time ratio lambda_max / threshold with threshold
2 (1 + beta) / eta, averaged over the last --late_fraction of the
measurements, writes a JSON summary and a plot.

    python scripts/edge_of_stability.py --dataset=../shared/data/cifar10-jpeg.tar.gz \
        --learning_rates=0.01,0.02,0.04 --momentum_runs=0.01:0.9 --steps=3000

Needs matplotlib for the plot (pip install -e ".[experiments]").
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from tf_sharpness import reuse, training  # noqa: E402
from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.reports import plotting  # noqa: E402
from tf_sharpness.experiments import edge_of_stability as eos  # noqa: E402

flags_lib.define_config_flags(
    lower_bounds={"train_size": 10, "spectrum_every": 1, "checkpoint_every": 1},
    dataset=..., steps=3000, train_size=1000, spectrum_every=25, checkpoint_every=500)
flags.DEFINE_list("learning_rates", ["0.01", "0.02", "0.04"], "GD learning rates.")
flags.DEFINE_list("momentum_runs", [], "Extra runs as LR:BETA with heavy-ball momentum.")
flags.DEFINE_float("late_fraction", 0.2, "Fraction of measurements that count as late.")
flags.DEFINE_string("out", "runs/edge_of_stability", "Output folder.")
flags.DEFINE_string("plot", "", "PNG path of the plot (default OUT/eos.png).")
flags.DEFINE_string("json", "", "Path of the JSON of every run (default OUT/eos.json); "
                    "scripts/eos_report.py reads it.")
FLAGS = flags.FLAGS


def base_config() -> training.Config:
  """The shipped edge_of_stability.cfg, read as train.py reads a flagfile."""
  return flags_lib.config_from_flagfile(
      os.path.join(flags_lib.FLAGFILES, "edge_of_stability.cfg"))


def runs() -> list[tuple[float, float]]:
  """(eta, beta) of every run: --learning_rates without momentum, then
  --momentum_runs."""
  out = [(float(lr), 0.0) for lr in FLAGS.learning_rates]
  for spec in FLAGS.momentum_runs:
    try:
      lr, beta = (float(v) for v in spec.split(":"))
    except ValueError:
      raise app.UsageError(f"--momentum_runs must be LR:BETA items, got {spec!r}") from None
    out.append((lr, beta))
  return out


def main(argv):
  del argv
  results = []
  for lr, beta in runs():
    cfg = eos.config(base_config(), lr, beta, FLAGS.out, dataset=FLAGS.dataset,
                     steps=FLAGS.steps, train_size=FLAGS.train_size,
                     spectrum_every=FLAGS.spectrum_every,
                     checkpoint_every=FLAGS.checkpoint_every)
    logging.info("run %s", eos.run_name(lr, beta))
    records = reuse.train_or_reuse(cfg)
    r = eos.summarize(records, lr, beta, FLAGS.late_fraction)
    results.append(r)
    if r["diverged"]:
      print(f"{r['run']}: threshold {r['threshold']:.1f}; diverged at step "
            f"{records[-1]['step']}"
            f" (lambda_0 = {r['initial_sharpness']:.1f}, eta*lambda_0 = "
            f"{lr * r['initial_sharpness']:.1f})", flush=True)
    else:
      print(f"{r['run']}: threshold 2(1+beta)/eta = {r['threshold']:.1f}, lambda_max from "
            f"{r['initial_sharpness']:.2f} to late mean {r['late_ratio'] * r['threshold']:.2f}: "
            f"ratio {r['late_ratio']:.3f}", flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(FLAGS.json or os.path.join(FLAGS.out, "eos.json"), "w") as f:
    json.dump(results, f)
  plot(results, FLAGS.plot or os.path.join(FLAGS.out, "eos.png"))


def plot(results, path):
  plt = plotting.pyplot()
  if plt is None:
    return
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for i, r in enumerate(results):
    color = f"C{i}"
    if r["diverged"]:
      continue  # its sharpness explodes; reported in the table
    ax1.plot(r["steps"], r["sharpness"], color=color, label=r["run"])
    ax1.axhline(r["threshold"], color=color, linestyle="--", linewidth=1)
    ax2.plot(*zip(*r["loss"]), color=color, label=r["run"])
  ax1.set_xlabel("step")
  ax1.set_ylabel("top Hessian eigenvalue (dashed: 2(1+β)/η)")
  ax2.set_xlabel("step")
  ax2.set_ylabel("training loss (MSE)")
  ax2.set_yscale("log")
  ax1.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"plot: {path}")


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
