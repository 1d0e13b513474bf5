#!/usr/bin/env python3
"""Warm-started vs cold spectrum tracking along a SimpleCNN SGD trajectory.

Trains SimpleCNN with SGD on CIFAR-10 and, every --every steps, measures the
top-k eigenvalues of the Hessian (on --hessian_size training images) twice
at the same parameters: cold (a random start vector) and warm (started from
the previous measurement's eigenvectors), both to the same relative residual
tolerance.  Prints HVPs per measurement and their ratio, and checks the two
agree.

    python benchmarks/tracking.py [--dataset=PATH] [--measurements=6] [--every=40]
        [--warmup_steps=0] [--synthetic_angles=0,1,3,10]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_sharpness as tfs  # noqa: E402
from machine import default_dataset, print_machine  # noqa: E402  (benchmarks/ is on the path)
from tf_sharpness import data, losses, models  # noqa: E402
from tf_sharpness.curvature import tracking  # noqa: E402
from tf_sharpness.train_step import TrainStep  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default=default_dataset())
  p.add_argument("--train_size", type=int, default=5000)
  p.add_argument("--hessian_size", type=int, default=256)
  p.add_argument("--measurements", type=int, default=6)
  p.add_argument("--every", type=int, default=40)
  p.add_argument("--warmup_steps", type=int, default=0,
                 help="SGD steps before the first measurement (e.g. 1500 to measure "
                 "late in training, where the top eigenvalues are well separated)")
  p.add_argument("--k", type=int, default=5)
  p.add_argument("--tol", type=float, default=1e-3)
  p.add_argument("--lr", type=float, default=0.01)
  p.add_argument("--synthetic_angles", default="",
                 help="e.g. 0,1,3,10: after the last measurement, also warm-start "
                 "from the current top-k eigenvectors rotated by these angles "
                 "(degrees) towards random directions, to separate the cost of "
                 "rotation within the top cluster from the cost of Lanczos itself")
  args = p.parse_args()
  print_machine()
  prep = data.prepare(data.load(args.dataset), train_size=args.train_size, seed=0)
  keras.utils.set_random_seed(0)
  model = models.simple_cnn(prep.input_shape, 10)
  loss_fn = losses.mean_loss("xent")
  opt = keras.optimizers.SGD(args.lr)
  hx, hy = prep.train_x[:args.hessian_size], prep.train_y[:args.hessian_size]
  op = tfs.HessianOperator(model, loss_fn, (hx, hy))

  step = TrainStep(model, opt, losses.per_example_loss("xent"))

  rng = np.random.default_rng(0)

  def sgd_steps(n):
    for _ in range(n):
      idx = rng.choice(len(prep.train_y), 128, replace=False)
      step(prep.train_x[idx], prep.train_y[idx])

  sgd_steps(args.warmup_steps)
  prev = None
  cold_total = warm_total = 0
  rows = []
  for m in range(args.measurements):
    t = time.perf_counter()
    cold = tfs.top_eigenpairs(op, k=args.k, tol=args.tol, seed=m)
    t_cold = time.perf_counter() - t
    if prev is not None:
      t = time.perf_counter()
      warm = tfs.top_eigenpairs(op, k=args.k, tol=args.tol, seed=m,
                                start=tracking.warm_start_vector(prev, seed=m))
      t_warm = time.perf_counter() - t
      rel = np.max(np.abs(warm.eigenvalues - cold.eigenvalues) / np.abs(cold.eigenvalues))
      rows.append((m, cold.num_matvecs, warm.num_matvecs, t_cold, t_warm, rel,
                   cold.eigenvalues[0]))
      cold_total += cold.num_matvecs
      warm_total += warm.num_matvecs
      print(f"measurement {m}: lambda_max {cold.eigenvalues[0]:.4g}; HVPs cold "
            f"{cold.num_matvecs}, warm {warm.num_matvecs}; wall cold {t_cold:.1f}s "
            f"warm {t_warm:.1f}s; max rel. diff of top-{args.k} {rel:.1e}", flush=True)
      prev = warm
    else:
      print(f"measurement 0: lambda_max {cold.eigenvalues[0]:.4g}; HVPs cold "
            f"{cold.num_matvecs}", flush=True)
      prev = cold
    sgd_steps(args.every)
  if args.synthetic_angles:
    exact = tfs.top_eigenpairs(op, k=args.k, tol=1e-6, seed=1000)
    e = exact.flat_eigenvectors()
    r = np.random.default_rng(1).standard_normal(e.shape)
    r -= (r @ e.T) @ e
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    for deg in (float(a) for a in args.synthetic_angles.split(",")):
      u = np.cos(np.radians(deg)) * e + np.sin(np.radians(deg)) * r
      synth = tfs.top_eigenpairs(op, k=args.k, tol=args.tol, seed=1001,
                                 start=tracking.warm_start_vector(u, seed=1001))
      print(f"synthetic warm start, top-{args.k} rotated by {deg:g} degrees towards "
            f"random directions: {synth.num_matvecs} HVPs", flush=True)
  print(f"HVPs per measurement: cold {cold_total / len(rows):.1f}, warm "
        f"{warm_total / len(rows):.1f}; warm / cold = {warm_total / cold_total:.2f} "
        f"(SimpleCNN, {args.hessian_size} Hessian examples, k={args.k}, tol={args.tol}, "
        f"{args.every} SGD steps of lr {args.lr} between measurements, first after "
        f"{args.warmup_steps})")


if __name__ == "__main__":
  main()
