#!/usr/bin/env python3
"""Training throughput of our loop (``training.train`` with no probe due)
against ``model.fit`` on the same model, data and batch size.

Each side is timed as the difference between a run of W + N steps and a run
of W steps (so start-up, data loading and tracing cancel out), runs of the
two sides alternating so that load on the machine hits both alike; the best
of --repeats is kept.  Prints steps per second and the ratio ours / fit
(target >= 0.95).

    python benchmarks/loop_vs_fit.py [--model=simple_cnn] [--steps=195] [--repeats=3]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from machine import print_machine  # noqa: E402  (benchmarks/ is on the path)
from tf_sharpness import data, losses, run_setup, training  # noqa: E402


def our_loop(args, steps: int) -> float:
  cfg = training.Config(
      logdir=tempfile.mkdtemp(prefix="loop_vs_fit_"), dataset="cifar10_mini",
      model=args.model, batch_size=args.batch_size, steps=steps, spectrum_every=0,
      eval_every=0, log_every=args.log_every, learning_rate=0.01)
  start = time.perf_counter()
  training.train(cfg)
  return time.perf_counter() - start


def keras_fit(args, steps: int, jit_compile) -> float:
  ds = data.prepare(data.load("cifar10_mini"), seed=0)
  keras.utils.set_random_seed(0)
  model = run_setup.model(training.Config(model=args.model), ds.input_shape,
                          ds.num_classes)
  model.compile(optimizer=keras.optimizers.SGD(0.01), loss=losses.mean_loss("xent"),
                jit_compile=jit_compile)
  per_epoch = len(ds.train_y) // args.batch_size
  start = time.perf_counter()
  model.fit(ds.train_x[:per_epoch * args.batch_size], ds.train_y[:per_epoch * args.batch_size],
            batch_size=args.batch_size, epochs=steps // per_epoch, verbose=0)
  return time.perf_counter() - start


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="simple_cnn")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--warmup", type=int, default=39, help="W: one epoch of cifar10_mini")
  p.add_argument("--steps", type=int, default=195, help="N: steps timed")
  p.add_argument("--log_every", type=int, default=10, help="our loop's --log_every")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  print_machine()
  import logging  # pylint: disable=g-import-not-at-top
  logging.getLogger("tf_sharpness").setLevel(logging.WARNING)
  w, n = args.warmup, args.steps
  sides = {"ours": lambda s: our_loop(args, s),
           "fit": lambda s: keras_fit(args, s, "auto"),
           "fit (jit_compile=False)": lambda s: keras_fit(args, s, False)}
  best = {k: float("inf") for k in sides}
  for r in range(args.repeats):
    for name, run in sides.items():
      seconds = run(w + n) - run(w)
      best[name] = min(best[name], seconds)
      print(f"repeat {r + 1}: {name}: {n} steps in {seconds:.2f} s", flush=True)
  print(f"{args.model}, batch {args.batch_size}, {n} steps after {w}; best of "
        f"{args.repeats}:")
  for name, seconds in best.items():
    print(f"  {name}: {n / seconds:.2f} steps/s ({1e3 * seconds / n:.1f} ms/step)")
  for name in ("fit", "fit (jit_compile=False)"):
    print(f"ours / {name} throughput: {best[name] / best['ours']:.3f}")


if __name__ == "__main__":
  main()
