#!/usr/bin/env python3
"""What the per-step curvature quantities cost (tf_sharpness.directional and
the lambda_max interval), beside one training step, on the paper's
SimpleCNN.

Prints, measured in one run (minimum of --repeats, calls interleaved):
  * one gradient pass and one HVP on the Hessian data (--examples images);
  * directional curvature along the gradient (one HVP), batch sharpness over
    --batches minibatches of the Hessian data (a gradient and an HVP each),
    critical sharpness along the negative gradient (forward passes only),
    the gradient of the sharpness u^T H u (the gradient of one HVP), the top
    eigenvalue by Lanczos (tol 1e-3, for scale) and the lambda_max interval
    (16 batches);
  * one SGD training step on a batch of --batch_size;
each as seconds and as gradient passes on the same data, with the passes
each makes (HVPs, gradients, losses).

    python benchmarks/directional.py [--dataset=PATH] [--examples=256] [--repeats=5]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_sharpness as tfs  # noqa: E402
from machine import default_dataset, print_machine  # noqa: E402  (benchmarks/ is on the path)
from spectrum import interleaved  # noqa: E402
from tf_sharpness import data, losses, models  # noqa: E402
from tf_sharpness import directional as D  # noqa: E402
from tf_sharpness.curvature import vectors  # noqa: E402
from tf_sharpness.subsample import lambda_max_interval  # noqa: E402
from tf_sharpness.train_step import TrainStep  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default=default_dataset())
  p.add_argument("--examples", type=int, default=256)
  p.add_argument("--batches", type=int, default=4)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  print_machine()
  ds = data.prepare(data.load(args.dataset), train_size=max(args.examples, args.batch_size),
                    seed=0)
  keras.utils.set_random_seed(0)
  model = models.simple_cnn(ds.input_shape, 10)
  x, y = ds.train_x[:args.examples], ds.train_y[:args.examples]
  loss = losses.mean_loss("xent")
  op = tfs.HessianOperator(model, loss, (x, y))
  _, grad = op.loss_and_gradient()
  g = vectors.to_numpy(grad)
  v = np.random.default_rng(0).normal(size=op.dim)
  parts = np.array_split(np.arange(args.examples), args.batches)
  batches = [(x[i], y[i]) for i in parts]
  step = TrainStep(model, keras.optimizers.SGD(0.0), losses.per_example_loss("xent"))
  xb, yb = ds.train_x[:args.batch_size], ds.train_y[:args.batch_size]
  counts = {}
  interval_op = tfs.HessianOperator(model, loss, (x, y))  # reused, as the probe does

  def record(name, fn):
    def run():
      counts[name] = fn()
    return run

  fns = {
      "gradient": record("gradient", lambda: (op.loss_and_gradient(), "1 gradient")[1]),
      "HVP": record("HVP", lambda: (op.matvec(vectors.from_numpy(v, op.shapes, op.dtype)),
                                    "1 HVP")[1]),
      "directional curvature (gradient)": record(
          "directional curvature (gradient)",
          lambda: f"{D.directional_curvature(direction=g, evaluator=op).num_matvecs} HVP"),
      f"batch sharpness ({args.batches} batches)": record(
          f"batch sharpness ({args.batches} batches)",
          lambda: (lambda r: f"{r.num_gradients} gradients + {r.num_matvecs} HVPs on batches "
                   f"of {len(parts[0])}")(D.batch_sharpness(batches=batches, evaluator=op))),
      "critical sharpness (-gradient)": record(
          "critical sharpness (-gradient)",
          lambda: f"{D.critical_sharpness(direction=-g, evaluator=op, rtol=1e-2).num_losses}"
                  " losses"),
      "sharpness gradient": record("sharpness gradient", lambda: (
          D.sharpness_gradient(u=g / np.linalg.norm(g), evaluator=op), "the gradient of 1 HVP")[1]),
      "top eigenvalue (Lanczos, tol 1e-3)": record(
          "top eigenvalue (Lanczos, tol 1e-3)",
          lambda: f"{tfs.top_eigenpairs(op, k=1, tol=1e-3).num_matvecs} HVPs"),
      "lambda_max interval (16 batches)": record(
          "lambda_max interval (16 batches)",
          lambda: "{} HVPs".format(lambda_max_interval(
              model, loss, (x, y), tol=1e-3, operator=interval_op).num_matvecs)),
      f"SGD step (batch {args.batch_size})": record(
          f"SGD step (batch {args.batch_size})", lambda: (float(step(xb, yb).loss), "")[1]),
  }
  t = time.perf_counter()
  times = interleaved(fns, args.repeats)
  base = times["gradient"][0]
  train = times[f"SGD step (batch {args.batch_size})"][0]
  print(f"SimpleCNN, {op.dim} parameters, Hessian data {args.examples} images; "
        f"{args.repeats} repeats ({time.perf_counter() - t:.0f} s)")
  print("| quantity | seconds (min) | gradient passes on the Hessian data | "
        "training steps | what it takes |")
  print("| --- | --- | --- | --- | --- |")
  for name, (best, _) in times.items():
    print(f"| {name} | {best:.3f} | {best / base:.1f} | {best / train:.1f} | "
          f"{counts.get(name, '')} |")


if __name__ == "__main__":
  main()
