#!/usr/bin/env python3
"""Per-step time of NSGD (K directions set) / Keras SGD on SimpleCNN, batch 128.

Both optimizers train identical copies of the model under the same
tf.function train step; steps are interleaved so that machine load hits both
alike.  Prints min and median step times and their ratios.

    python benchmarks/nsgd.py [--steps=30] [--top_k=5] [--momentum=0.0]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_sharpness as tfs  # noqa: E402
from machine import print_machine  # noqa: E402  (benchmarks/ is on the path)
from tf_sharpness import data, losses, models  # noqa: E402
from tf_sharpness.train_step import TrainStep  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--top_k", type=int, default=5)
  p.add_argument("--momentum", type=float, default=0.0)
  args = p.parse_args()
  print_machine()
  prep = data.prepare(data.load("cifar10_mini"), seed=0)
  per_example = losses.per_example_loss("xent")
  keras.utils.set_random_seed(0)
  m_sgd = models.simple_cnn(prep.input_shape, 10)
  m_nsgd = models.simple_cnn(prep.input_shape, 10)
  m_nsgd.set_weights(m_sgd.get_weights())
  sgd = keras.optimizers.SGD(0.01, momentum=args.momentum)
  nsgd = tfs.NSGD(0.01, gamma=0.1, top_k=args.top_k, momentum=args.momentum)
  sgd.build(m_sgd.trainable_variables)
  nsgd.build(m_nsgd.trainable_variables)
  rng = np.random.default_rng(0)
  nsgd.set_directions([[rng.standard_normal(v.shape) for v in m_nsgd.trainable_variables]
                       for _ in range(args.top_k)])
  steps = {"sgd": TrainStep(m_sgd, sgd, per_example),
           "nsgd": TrainStep(m_nsgd, nsgd, per_example)}
  times = {k: [] for k in steps}
  n = len(prep.train_y)
  for i in range(args.steps + 2):
    idx = rng.choice(n, args.batch_size, replace=False)
    x, y = prep.train_x[idx], prep.train_y[idx]
    for k, fn in steps.items():
      t = time.perf_counter()
      float(fn(x, y).loss)
      if i >= 2:  # the first two calls trace
        times[k].append(time.perf_counter() - t)
  print(f"SimpleCNN ({m_sgd.count_params():,} params), batch {args.batch_size}, "
        f"K={args.top_k}, momentum={args.momentum}, {args.steps} steps each")
  for k, v in times.items():
    print(f"{k}: min {min(v) * 1e3:.1f} ms, median {np.median(v) * 1e3:.1f} ms")
  print(f"NSGD / SGD per-step time: {min(times['nsgd']) / min(times['sgd']):.3f} "
        f"(min/min), {np.median(times['nsgd']) / np.median(times['sgd']):.3f} "
        f"(median/median)")


if __name__ == "__main__":
  main()
