#!/usr/bin/env python3
"""Spectrum-engine benchmark on the paper's SimpleCNN with 512 CIFAR-10 images.

Prints, measured side by side in one run:
  * HVP time / gradient time, for each HVP method;
  * Lanczos wall time / (num_matvecs x HVP time) (the Lanczos overhead);
  * HVPs needed for the top-5 eigenvalues at tol 1e-3.

    python benchmarks/spectrum.py [--dataset=PATH] [--examples=512] [--repeats=10]
    python benchmarks/spectrum.py --sizes=64,128,250,500 --repeats=5
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tf_sharpness as tfs  # noqa: E402
from machine import default_dataset, print_machine  # noqa: E402  (benchmarks/ is on the path)
from tf_sharpness import data, losses, models  # noqa: E402
from tf_sharpness.curvature import vectors  # noqa: E402


def interleaved(fns, repeats):
  """Min and median seconds of each fn, calls interleaved so that load on
  the machine hits all of them alike."""
  for fn in fns.values():
    fn()  # warm-up (tracing)
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t)
  return {k: (min(v), float(np.median(v))) for k, v in times.items()}


class TimedOperator:
  """Wraps an operator and adds up the time spent in its matvecs."""

  def __init__(self, op):
    self.op, self.shapes, self.dim, self.dtype = op, op.shapes, op.dim, op.dtype
    self.seconds = 0.0
    self.calls = 0

  def matvec(self, v):
    t = time.perf_counter()
    out = self.op.matvec(v)
    self.seconds += time.perf_counter() - t
    self.calls += 1
    return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default=default_dataset())
  p.add_argument("--examples", type=int, default=512)
  p.add_argument("--batch_size", type=int, default=512)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--filters", type=int, default=32)
  p.add_argument("--kernel_size", type=int, default=3)
  p.add_argument("--sizes", default="",
                 help="e.g. 64,128,250,500: only the HVP and gradient time at each "
                 "number of Hessian examples (the per-example cost that sizes a run)")
  args = p.parse_args()
  print_machine()
  if args.sizes:
    cost_per_example(args, [int(n) for n in args.sizes.split(",")])
    return

  raw = data.load(args.dataset)
  ds = data.prepare(raw, train_size=args.examples, seed=0)
  model = models.simple_cnn(ds.input_shape, 10, filters=args.filters,
                            kernel_size=args.kernel_size)
  loss = losses.mean_loss("xent")
  print(f"model {model.name} "
        f"({model.count_params():,} params); {args.examples} examples from "
        f"{args.dataset}; batch {args.batch_size}")
  ops = {m: tfs.HessianOperator(model, loss, (ds.train_x, ds.train_y), method=m,
                                batch_size=args.batch_size)
         for m in tfs.curvature.hvp.METHODS}
  op = ops["forward_over_reverse"]
  v = vectors.from_numpy(np.random.default_rng(0).standard_normal(op.dim),
                         op.shapes, op.dtype)
  fns = {"gradient": op.gradient}
  fns.update({m: (lambda o=o: o.matvec(v)) for m, o in ops.items()})
  t = interleaved(fns, args.repeats)
  g_min, g_med = t["gradient"]
  print(f"gradient: min {g_min * 1e3:.1f} ms, median {g_med * 1e3:.1f} ms")
  for m in ops:
    print(f"HVP {m}: min {t[m][0] * 1e3:.1f} ms, median {t[m][1] * 1e3:.1f} ms;"
          f" HVP/gradient = {t[m][0] / g_min:.2f} (min/min), "
          f"{t[m][1] / g_med:.2f} (median/median)")
  best = min(ops, key=lambda m: t[m][0])
  timed_op = TimedOperator(ops[best])
  start = time.perf_counter()
  res = tfs.top_eigenpairs(timed_op, k=5, tol=1e-3)
  wall = time.perf_counter() - start
  print(f"top-5 ({best}): {res.eigenvalues.round(4).tolist()}; "
        f"HVPs needed at tol 1e-3: {res.num_matvecs}; converged={res.converged}")
  print(f"Lanczos wall {wall:.2f} s over {res.num_matvecs} HVPs: overhead = "
        f"wall / (time in those HVPs) = {wall / timed_op.seconds:.3f}; "
        f"wall / (matvecs x min HVP time) = {wall / (res.num_matvecs * t[best][0]):.3f}")


def cost_per_example(args, sizes):
  """HVP and gradient time (min of --repeats, interleaved) per subset size."""
  ds = data.prepare(data.load(args.dataset), train_size=max(sizes), seed=0)
  model = models.simple_cnn(ds.input_shape, 10, filters=args.filters,
                            kernel_size=args.kernel_size)
  loss = losses.mean_loss("xent")
  print(f"model {model.name} ({model.count_params():,} params), {args.dataset}")
  for n in sizes:
    op = tfs.HessianOperator(model, loss, (ds.train_x[:n], ds.train_y[:n]),
                             batch_size=args.batch_size)
    v = vectors.from_numpy(np.random.default_rng(0).standard_normal(op.dim),
                           op.shapes, op.dtype)
    t = interleaved({"hvp": lambda: op.matvec(v), "gradient": op.gradient},
                    args.repeats)
    print(f"{n} examples: HVP {t['hvp'][0] * 1e3:.0f} ms ({t['hvp'][0] / n * 1e3:.2f} "
          f"ms per example), gradient {t['gradient'][0] * 1e3:.0f} ms", flush=True)


if __name__ == "__main__":
  main()
