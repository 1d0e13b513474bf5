#!/usr/bin/env python3
"""HVP cost per Keras backend: TensorFlow, JAX and PyTorch on the same models.

For an MLP, the SimpleCNN, a small transformer and an LSTM (float32,
synthetic data: the cost does not depend on the values), each backend in its
own process measures, interleaved, the gradient of the mean loss and one
Hessian-vector product of ``HessianOperator`` (the method it settles on),
and prints min-of-repeats times and HVP/gradient.

    python benchmarks/backends.py [--repeats=5] [--backends=tensorflow,jax,torch]
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(repeats: int) -> dict:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import keras
  import numpy as np
  import tf_sharpness as tfs
  from model_families import lstm, transformer  # benchmarks/ is on the path
  from spectrum import interleaved
  from tf_sharpness import models
  L = keras.layers

  def mlp():
    return keras.Sequential([keras.Input((784,)), L.Dense(256, activation="relu"),
                             L.Dense(256, activation="relu"), L.Dense(10)], name="mlp")

  rng = np.random.default_rng(0)
  cases = {
      "mlp": (mlp, rng.normal(size=(512, 784)).astype("float32"), 10),
      "simple_cnn": (lambda: models.simple_cnn((32, 32, 3), 10),
                     rng.normal(size=(128, 32, 32, 3)).astype("float32"), 10),
      "transformer": (transformer, rng.integers(0, 1000, (256, 32)).astype("int32"), 4),
      "lstm": (lstm, rng.integers(0, 1000, (256, 32)).astype("int32"), 4),
  }
  out = {}
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  for name, (build, x, classes) in cases.items():
    keras.utils.set_random_seed(0)
    model = build()
    y = rng.integers(0, classes, len(x))
    op = tfs.HessianOperator(model, loss, (x, y), self_check=False)
    v = [rng.normal(size=s).astype("float32") for s in op.shapes]
    times = interleaved({"gradient": op.gradient, "hvp": lambda: op.matvec(v)}, repeats)
    out[name] = {"parameters": op.dim, "gradient": times["gradient"][0],
                 "hvp": times["hvp"][0], "method": op.method}
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--backends", default="tensorflow,jax,torch")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    print(json.dumps(worker(args.repeats)))
    return
  from machine import print_machine
  print_machine()
  results = {}
  for backend in args.backends.split(","):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                           f"--repeats={args.repeats}"], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode:
      print(f"{backend}: failed\n{proc.stderr[-2000:]}")
      continue
    results[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
  print("| model | parameters | backend | gradient | HVP | HVP / gradient | method |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for name in next(iter(results.values())):
    for backend, res in results.items():
      r = res[name]
      print(f"| {name} | {r['parameters']:,} | {backend} | {r['gradient'] * 1e3:.1f} ms | "
            f"{r['hvp'] * 1e3:.1f} ms | {r['hvp'] / r['gradient']:.2f}x | {r['method']} |")


if __name__ == "__main__":
  main()
