#!/usr/bin/env python3
"""NSGD steers sharpness (Jastrzebski et al. 2019, Table 1), scaled down.

Trains the same SimpleCNN from the same initialization with SGD and with
NSGD for each gamma (K = --top_k directions refreshed every --refresh_every
steps on the Hessian subset), then reports the final top eigenvalue, test
accuracy, training loss and distance from initialization, as a Markdown
table and JSON.

    python scripts/nsgd_table.py --dataset=../shared/data/cifar10-jpeg.tar.gz \
        --gammas=0.01,0.1,1,5 --steps=600

Finished runs (same --out) are reused when the driver is started again.
"""

import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness import training  # noqa: E402

flags.DEFINE_string("dataset", "cifar10_mini", "Dataset (see train.py).")
flags.DEFINE_list("gammas", ["0.1", "1", "5"], "NSGD gammas (SGD is always run).")
flags.DEFINE_integer("steps", 600, "Steps per run.", lower_bound=1)
flags.DEFINE_integer("train_size", 5000, "Training examples.", lower_bound=10)
flags.DEFINE_integer("top_k", 5, "NSGD directions K.", lower_bound=1)
flags.DEFINE_integer("refresh_every", 50, "Steps between direction refreshes.",
                     lower_bound=1)
flags.DEFINE_float("learning_rate", 0.01, "Learning rate.")
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_string("model", "simple_cnn", "Model.")
flags.DEFINE_float("hessian_fraction", 0.05, "Hessian subset fraction.")
flags.DEFINE_string("out", "runs/nsgd_table", "Output folder.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  base = training.Config(
      dataset=FLAGS.dataset, train_size=FLAGS.train_size, model=FLAGS.model,
      learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
      steps=FLAGS.steps, spectrum_every=FLAGS.refresh_every,
      spectrum_k=FLAGS.top_k, hessian_fraction=FLAGS.hessian_fraction,
      eval_every=FLAGS.steps, log_every=50, seed=0)
  runs = [("SGD", dict(optimizer="sgd"))]
  runs += [(f"NSGD gamma={g}", dict(optimizer="nsgd", nsgd_gamma=float(g),
                                    nsgd_top_k=FLAGS.top_k))
           for g in FLAGS.gammas]
  rows = []
  for name, overrides in runs:
    logdir = os.path.join(FLAGS.out, name.replace(" ", "_").replace("=", ""))
    records = training.train_or_reuse(
        dataclasses.replace(base, logdir=logdir, **overrides))
    last = records[-1]
    if last.get("diverged"):
      sys.exit(f"run {name} diverged at step {last['step']}; logs in {logdir}")
    trained = [r for r in records if "loss" in r]
    tops = [r["top_eigenvalues"][0] for r in records if "top_eigenvalues" in r]
    row = {"run": name, "final_lambda_max": last["top_eigenvalues"][0],
           "max_lambda_max": max(tops), "test_accuracy": last.get("test_accuracy"),
           "train_loss": last.get("train_loss"),
           "distance_from_init": trained[-1]["distance_from_init"]}
    rows.append(row)
    print(json.dumps(row), flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "nsgd_table.json"), "w") as f:
    json.dump(rows, f, indent=1)
  print("| run | final lambda_max | max lambda_max | test accuracy | train loss | "
        "distance from init |")
  print("| --- | --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['run']} | {r['final_lambda_max']:.2f} | {r['max_lambda_max']:.2f} | "
          f"{r['test_accuracy']:.3f} | {r['train_loss']:.3f} | "
          f"{r['distance_from_init']:.2f} |")


if __name__ == "__main__":
  app.run(main)
