#!/usr/bin/env python3
"""Early-training phase diagram (Kalra & Barkeshli 2023).

For every (depth, width) of a ReLU FCN in standard parameterization: measure
the initial sharpness lambda_0 (Lanczos, on the training batch set), then for
c = 2^x (x = 0, dx, 2 dx, ... until the loss diverges) train 10 SGD steps
(batch --batch_size, MSE) from the same initialization with eta = c /
lambda_0, recording the loss and the sharpness lambda_t after every step and
the loss along the straight line theta_0 -> theta_10.  Per (depth, width):

* c_loss:    first c at which the loss ever exceeds its initial value;
* c_sharp:   first c at which lambda_t ever exceeds lambda_0;
* c_max:     largest c that does not diverge;
* c_barrier: first c at which the interpolation theta_0 -> theta_10 rises
             above the initial loss.

Each (depth, width) is independent: they run in parallel worker processes
(--workers), results are appended to OUT/runs.jsonl as they finish (a rerun
skips what is there: resume), and --shard=i/n takes every n-th configuration
(for several machines).  Writes OUT/runs.jsonl (every c), OUT/phase.csv (the
critical values), a plot, and the phase_diagram summary for the Spectrum tab.

    python scripts/phase_diagram.py --dataset=../shared/data/cifar10-jpeg.tar.gz \
        --depths=4 --widths=64,128,256,512 --out=runs/phase
"""

import csv
import json
import multiprocessing
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

flags.DEFINE_string("dataset", "cifar10_mini", "Dataset (see train.py).")
flags.DEFINE_list("depths", ["4"], "FCN depths (hidden layers).")
flags.DEFINE_list("widths", ["64", "128", "256"], "FCN widths.")
flags.DEFINE_integer("train_size", 2048, "Training examples.", lower_bound=8)
flags.DEFINE_integer("batch_size", 512, "SGD batch size.", lower_bound=1)
flags.DEFINE_integer("steps", 10, "SGD steps per run.", lower_bound=1)
flags.DEFINE_float("dx", 0.1, "Step of x in c = 2^x.", lower_bound=1e-3)
flags.DEFINE_float("x_max", 6.0, "Largest x tried if nothing diverges.")
flags.DEFINE_float("divergence", 1e3, "Loss / initial loss that counts as divergence.")
flags.DEFINE_integer("hessian_size", 512, "Examples for lambda_0 and lambda_t.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the initialization and batches.")
flags.DEFINE_integer("workers", 2, "Parallel worker processes.", lower_bound=1)
flags.DEFINE_string("shard", "0/1", "i/n: run every n-th configuration from the i-th.")
flags.DEFINE_string("out", "runs/phase_diagram", "Output folder.")
FLAGS = flags.FLAGS


def run_configuration(job):
  """All c for one (depth, width); returns its records (one per c)."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_sharpness as tfs  # pylint: disable=g-import-not-at-top
  from tf_sharpness import data, landscape, losses, models  # pylint: disable=g-import-not-at-top

  depth, width, opts = job["depth"], job["width"], job["opts"]
  prep = data.prepare(data.load(opts["dataset"]), train_size=opts["train_size"],
                      seed=opts["seed"])
  loss_fn = losses.mean_loss("mse")
  keras.utils.set_random_seed(opts["seed"])
  model = models.fcn(prep.input_shape, prep.num_classes, depth=depth, width=width,
                     activation="relu")
  init = [w.numpy() for w in model.trainable_variables]
  hx, hy = prep.train_x[:opts["hessian_size"]], prep.train_y[:opts["hessian_size"]]
  hess = tfs.HessianOperator(model, loss_fn, (hx, hy))
  evaluator = tfs.HessianOperator(model, loss_fn, (prep.train_x, prep.train_y))
  lam0 = float(tfs.top_eigenpairs(hess, k=1, tol=1e-3).eigenvalues[0])
  loss0 = evaluator.loss()
  rng = np.random.default_rng(opts["seed"])
  batches = [rng.choice(len(prep.train_y), opts["batch_size"], replace=False)
             for _ in range(opts["steps"])]
  lr_var = tf.Variable(0.0)
  opt = keras.optimizers.SGD(learning_rate=lambda: lr_var)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    opt.apply(tape.gradient(loss, model.trainable_variables),
              model.trainable_variables)
    return loss

  records = []
  x = 0.0
  while x <= opts["x_max"] + 1e-9:
    c = 2.0 ** x
    for w, v in zip(model.trainable_variables, init):
      w.assign(v)
    lr_var.assign(c / lam0)
    train_losses, sharpness, diverged = [], [], False
    for idx in batches:
      step(tf.constant(prep.train_x[idx]), tf.constant(prep.train_y[idx]))
      try:
        train_losses.append(evaluator.loss())
        sharpness.append(float(tfs.top_eigenpairs(hess, k=1, tol=1e-2).eigenvalues[0]))
      except tfs.NonFiniteError:
        diverged = True
        break
      if train_losses[-1] > opts["divergence"] * loss0:
        diverged = True
        break
    barrier = None
    if not diverged:
      theta_final = landscape.current_parameters(evaluator)
      theta0 = np.concatenate([v.reshape(-1) for v in init]).astype(np.float64)
      walk = landscape.walk(evaluator, theta0, theta_final, num_points=11)
      barrier = float(np.max(walk.losses))
    records.append({"depth": depth, "width": width, "c": c, "x": round(x, 6),
                    "learning_rate": c / lam0, "lambda0": lam0, "loss0": loss0,
                    "losses": train_losses, "sharpness": sharpness,
                    "diverged": diverged, "interpolation_max": barrier})
    if diverged:
      break
    x += opts["dx"]
  return records


def critical_values(records):
  """c_loss, c_sharp, c_max, c_barrier of one (depth, width)."""
  first = lambda pred: next((r["c"] for r in records if pred(r)), None)
  ok = [r for r in records if not r["diverged"]]
  return {
      "depth": records[0]["depth"], "width": records[0]["width"],
      "lambda0": records[0]["lambda0"],
      "c_loss": first(lambda r: r["diverged"] or max(r["losses"]) > r["loss0"]),
      "c_sharp": first(lambda r: r["diverged"] or max(r["sharpness"]) > r["lambda0"]),
      "c_max": max(r["c"] for r in ok) if ok else None,
      "c_barrier": first(lambda r: r["diverged"] or r["interpolation_max"] > r["loss0"]),
  }


def phase_of(record):
  """The early-training regime of one run."""
  if record["diverged"]:
    return "divergence"
  if max(record["losses"]) > record["loss0"]:
    return "loss catapult"
  if max(record["sharpness"]) > record["lambda0"]:
    return "sharpening"
  return "sharpness reduction"


def main(argv):
  del argv
  i, n = (int(v) for v in FLAGS.shard.split("/"))
  if not 0 <= i < n:
    raise app.UsageError(f"--shard must be i/n with 0 <= i < n, got {FLAGS.shard}")
  configs = [(int(d), int(w)) for d in FLAGS.depths for w in FLAGS.widths][i::n]
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.join(FLAGS.out, "runs.jsonl")
  done = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        r = json.loads(line)
        done.setdefault((r["depth"], r["width"]), []).append(r)
  opts = {k: FLAGS[k].value for k in ("dataset", "train_size", "batch_size", "steps",
                                      "dx", "x_max", "divergence", "hessian_size",
                                      "seed")}
  todo = [{"depth": d, "width": w, "opts": opts} for d, w in configs if (d, w) not in done]
  print(f"{len(configs)} configurations, {len(configs) - len(todo)} done, "
        f"{len(todo)} to run on {FLAGS.workers} workers", flush=True)
  if todo:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(FLAGS.workers, len(todo))) as pool, open(path, "a") as f:
      for records in pool.imap_unordered(run_configuration, todo):
        for r in records:
          f.write(json.dumps(r) + "\n")
        f.flush()
        done[(records[0]["depth"], records[0]["width"])] = records
        print(f"depth {records[0]['depth']} width {records[0]['width']}: "
              f"{critical_values(records)}", flush=True)
  rows = [critical_values(done[c]) for c in configs]
  with open(os.path.join(FLAGS.out, "phase.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  write_summary([r for c in configs for r in done[c]], FLAGS.out)
  plot(rows, [r for c in configs for r in done[c]], os.path.join(FLAGS.out, "phase.png"))


def write_summary(records, out):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_sharpness import summary  # pylint: disable=g-import-not-at-top
  with tf.summary.create_file_writer(out).as_default():
    summary.phase_diagram("phase_diagram", [
        {"c": r["c"], "width": r["width"], "depth": r["depth"], "phase": phase_of(r)}
        for r in records], step=0)


def plot(rows, records, path):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib is not installed: no plot")
    return
  depths = sorted({r["depth"] for r in rows})
  fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 4), squeeze=False)
  colors = {"sharpness reduction": "C0", "sharpening": "C2", "loss catapult": "C1",
            "divergence": "C3"}
  for ax, depth in zip(axes[0], depths):
    for phase, color in colors.items():
      pts = [(1 / r["width"], r["c"]) for r in records
             if r["depth"] == depth and phase_of(r) == phase]
      if pts:
        ax.scatter(*zip(*pts), s=12, color=color, label=phase)
    for key, style in (("c_loss", "-"), ("c_sharp", "--"), ("c_max", ":"),
                       ("c_barrier", "-.")):
      pts = sorted((1 / r["width"], r[key]) for r in rows
                   if r["depth"] == depth and r[key] is not None)
      if pts:
        ax.plot(*zip(*pts), "k" + style, linewidth=1, label=key)
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("1 / width")
    ax.set_ylabel("c = η λ₀")
    ax.set_title(f"depth {depth}")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"plot: {path}")


if __name__ == "__main__":
  app.run(main)
