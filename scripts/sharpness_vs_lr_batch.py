#!/usr/bin/env python3
"""Sharpness along the SGD trajectory vs learning rate and batch size
(Jastrzebski et al. 2019, Fig. 1), scaled down.

Two sweeps of plain SGD on SimpleCNN from the same initialization:

* learning rate eta in --learning_rates at batch size --lr_sweep_batch;
* batch size B in --batch_sizes at learning rate --batch_sweep_lr.

Every run trains for --epochs epochs of --train_size images, and measures the
top-k Hessian eigenvalues (Lanczos, on --hessian_fraction of the training
set) --measures_per_epoch times per epoch, so the curves share an x axis in
epochs.  For each run it reports the peak of lambda_max, the epoch of the peak,
the mean lambda_max over the last quarter of the measurements, the final
lambda_max, and the test accuracy; writes ``sharpness.json`` and a
plot.  Finished runs are reused when the driver is started again.

    python scripts/sharpness_vs_lr_batch.py \
        --dataset=../shared/data/cifar10-jpeg.tar.gz --epochs=20

Needs matplotlib for the plot (pip install -e ".[experiments]").
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from tf_sharpness import training  # noqa: E402

flags.DEFINE_string("dataset", "cifar10_mini", "Dataset (see train.py).")
flags.DEFINE_list("learning_rates", ["0.1", "0.01", "0.001"],
                  "Learning rates of the first sweep.")
flags.DEFINE_integer("lr_sweep_batch", 128, "Batch size of the learning-rate sweep.",
                     lower_bound=1)
flags.DEFINE_list("batch_sizes", ["8", "128", "1024"], "Batch sizes of the second sweep.")
flags.DEFINE_float("batch_sweep_lr", 0.05, "Learning rate of the batch-size sweep.")
flags.DEFINE_float("epochs", 20, "Epochs per run.", lower_bound=0)
flags.DEFINE_integer("measures_per_epoch", 2, "Spectrum measurements per epoch.",
                     lower_bound=1)
flags.DEFINE_integer("train_size", 10000, "Training examples (class-balanced subset).",
                     lower_bound=10)
flags.DEFINE_integer("top_k", 5, "Eigenvalues per measurement.", lower_bound=1)
flags.DEFINE_float("hessian_fraction", 0.05, "Hessian subset fraction.")
flags.DEFINE_string("model", "simple_cnn", "Model.")
flags.DEFINE_integer("eval_size", 10000, "Test images for the final accuracy.",
                     lower_bound=1)
flags.DEFINE_string("out", "runs/sharpness_vs_lr_batch", "Output folder.")
flags.DEFINE_string("plot", "", "PNG path of the plot (default OUT/sharpness.png).")
FLAGS = flags.FLAGS


def runs():
  """(sweep, name, learning rate, batch size) of every run, in order."""
  out = [("learning rate", f"lr{float(lr):g}_b{FLAGS.lr_sweep_batch}", float(lr),
          FLAGS.lr_sweep_batch) for lr in FLAGS.learning_rates]
  out += [("batch size", f"lr{FLAGS.batch_sweep_lr:g}_b{int(b)}", FLAGS.batch_sweep_lr,
           int(b)) for b in FLAGS.batch_sizes]
  return out


def check(batch):
  if FLAGS.train_size // batch < FLAGS.measures_per_epoch:
    raise app.UsageError(
        f"--train_size={FLAGS.train_size} gives {FLAGS.train_size // batch} steps "
        f"per epoch at batch size {batch}, fewer than --measures_per_epoch="
        f"{FLAGS.measures_per_epoch}")


def run_one(name, lr, batch):
  """Trains one run (or reuses a finished one); returns its metrics records."""
  steps_per_epoch = FLAGS.train_size // batch
  steps = max(1, round(FLAGS.epochs * steps_per_epoch))
  cfg = training.Config(
      dataset=FLAGS.dataset, train_size=FLAGS.train_size, model=FLAGS.model,
      optimizer="sgd", learning_rate=lr, batch_size=batch, steps=steps,
      spectrum_every=max(1, steps_per_epoch // FLAGS.measures_per_epoch),
      spectrum_k=FLAGS.top_k, hessian_fraction=FLAGS.hessian_fraction,
      eval_every=steps, eval_size=FLAGS.eval_size,
      log_every=max(1, steps_per_epoch // 4), seed=0,
      logdir=os.path.join(FLAGS.out, name))
  logging.info("run %s: eta %g, batch %d, %d steps (%d per epoch)", name, lr, batch,
               steps, steps_per_epoch)
  return training.train_or_reuse(cfg)


def summarize(sweep, name, lr, batch, records):
  measured = [r for r in records if "top_eigenvalues" in r]
  epochs = [r["epoch"] for r in measured]
  tops = [r["top_eigenvalues"][0] for r in measured]
  peak = max(range(len(tops)), key=tops.__getitem__)
  last = records[-1]
  late = tops[len(tops) - max(1, len(tops) // 4):]
  return {"sweep": sweep, "run": name, "learning_rate": lr, "batch_size": batch,
          "diverged": bool(last.get("diverged")), "epochs": epochs,
          "lambda_max": tops,
          "top_eigenvalues": [r["top_eigenvalues"] for r in measured],
          "initial_lambda_max": tops[0], "peak_lambda_max": tops[peak],
          "peak_epoch": epochs[peak], "final_lambda_max": tops[-1],
          "late_mean_lambda_max": sum(late) / len(late),
          "test_accuracy": last.get("test_accuracy"),
          "train_loss": last.get("train_loss")}


def main(argv):
  del argv
  for _, _, _, batch in runs():
    check(batch)
  results = []
  for sweep, name, lr, batch in runs():
    row = summarize(sweep, name, lr, batch, run_one(name, lr, batch))
    results.append(row)
    print(f"{name}: lambda_max {row['initial_lambda_max']:.2f} -> peak "
          f"{row['peak_lambda_max']:.2f} at epoch {row['peak_epoch']:.1f} -> final "
          f"{row['final_lambda_max']:.2f}; test accuracy {row['test_accuracy']}",
          flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "sharpness.json"), "w") as f:
    json.dump(results, f)
  print("| sweep | eta | B | lambda_max at start | peak lambda_max (epoch) | "
        "mean lambda_max, last quarter | final lambda_max | test accuracy | "
        "train loss |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in results:
    acc = "—" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}"
    loss = "—" if r["train_loss"] is None else f"{r['train_loss']:.3f}"
    print(f"| {r['sweep']} | {r['learning_rate']:g} | {r['batch_size']} | "
          f"{r['initial_lambda_max']:.1f} | {r['peak_lambda_max']:.1f} "
          f"({r['peak_epoch']:.1f}) | {r['late_mean_lambda_max']:.1f} | "
          f"{r['final_lambda_max']:.1f} | {acc} | {loss} |")
  plot(results, FLAGS.plot or os.path.join(FLAGS.out, "sharpness.png"))


def plot(results, path):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib is not installed: no plot (pip install -e '.[experiments]')")
    return
  sweeps = list(dict.fromkeys(r["sweep"] for r in results))
  fig, axes = plt.subplots(1, len(sweeps), figsize=(5.5 * len(sweeps), 4),
                           squeeze=False)
  for ax, sweep in zip(axes[0], sweeps):
    for r in (r for r in results if r["sweep"] == sweep):
      label = (f"η = {r['learning_rate']:g}" if sweep == "learning rate"
               else f"B = {r['batch_size']}")
      ax.plot(r["epochs"], r["lambda_max"], marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("top Hessian eigenvalue λ_max")
    ax.set_yscale("log")
    ax.set_title(f"{sweep} sweep")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"plot: {path}")


if __name__ == "__main__":
  app.run(main)
