#!/usr/bin/env python3
"""HVP cost on users' models: a small transformer classifier and an LSTM.

Prints, measured in one run on synthetic token/sequence data (the cost does
not depend on the values):
  * HVP time / gradient time for each HVP method (the one an RNN cannot use
    is reported as falling back);
  * the per-layer pass (top-k of every layer's diagonal Hessian block, the
    ``blocks="layer"`` measurement) / one full top-k measurement, in time
    and in HVPs;
  * the HessianOperator's self-check (one HVP and two differences of
    gradients at steps h and 2h, once per operator) in gradients, traced,
    and the first product with and without it (tracing included), with the
    check's outcome.

    python benchmarks/model_families.py [--examples=256] [--repeats=5] [--k=3]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_sharpness as tfs  # noqa: E402
from machine import print_machine  # noqa: E402  (benchmarks/ is on the path)
from spectrum import interleaved  # noqa: E402
from tf_sharpness.curvature import blocks as blocks_lib  # noqa: E402

L = keras.layers
VOCAB, LENGTH, CLASSES = 1000, 32, 4


def transformer(width=64, heads=4):
  """One pre-norm encoder block on token embeddings, mean-pooled."""
  inp = keras.Input((LENGTH,), dtype="int32")
  h = L.Embedding(VOCAB, width)(inp)
  a = L.LayerNormalization()(h)
  h = h + L.MultiHeadAttention(heads, width // heads)(a, a)
  f = L.LayerNormalization()(h)
  h = h + L.Dense(width)(L.Dense(2 * width, activation="gelu")(f))
  out = L.Dense(CLASSES)(L.GlobalAveragePooling1D()(h))
  return keras.Model(inp, out, name="transformer")


def lstm(width=64):
  return keras.Sequential([keras.Input((LENGTH,), dtype="int32"), L.Embedding(VOCAB, 32),
                           L.LSTM(width), L.Dense(CLASSES)], name="lstm")


def timed_matvecs(op):
  """Wraps op.matvec to add up its seconds."""
  inner = op.matvec
  op.seconds = 0.0

  def matvec(v):
    t = time.perf_counter()
    out = inner(v)
    op.seconds += time.perf_counter() - t
    return out
  op.matvec = matvec
  return op


def hvp_vs_gradient(model, data, repeats):
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  fns, methods = {}, {}
  grad_op = tfs.LossEvaluator(model, loss, data)
  fns["gradient"] = grad_op.gradient
  for method in tfs.curvature.hvp.METHODS:
    op = tfs.HessianOperator(model, loss, data, method=method)
    v = [np.random.default_rng(0).normal(size=s).astype("float32") for s in op.shapes]
    op.matvec(v)  # decides the method (falls back if needed)
    methods[method] = op.method
    fns[method] = lambda op=op, v=v: op.matvec(v)
  times = interleaved(fns, repeats)
  base = times["gradient"][0]
  print(f"  gradient: {base * 1e3:.1f} ms (min of {repeats})")
  for method in tfs.curvature.hvp.METHODS:
    used = methods[method]
    note = "" if used == method else f" (falls back to {used})"
    print(f"  HVP {method}{note}: {times[method][0] * 1e3:.1f} ms = "
          f"{times[method][0] / base:.2f}x the gradient")


def self_check_cost(model, data, repeats):
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  grad_op = tfs.LossEvaluator(model, loss, data)
  first = {}
  for check in (False, True):
    op = tfs.HessianOperator(model, loss, data, self_check=check)
    v = [np.random.default_rng(0).normal(size=s).astype("float32") for s in op.shapes]
    t = time.perf_counter()
    op.matvec(v)
    first[check] = time.perf_counter() - t
  d = op.hessian_definition()
  times = interleaved({"gradient": grad_op.gradient,
                       "check": op._disagrees_with_differences}, repeats)
  print(f"  self-check: {times['check'][0] * 1e3:.1f} ms = "
        f"{times['check'][0] / times['gradient'][0]:.2f} gradients, once per operator "
        f"(outcome: {d['fd_check']}, relative error {d['fd_check_relative_error']:.1e}, "
        f"spread {d.get('fd_check_spread', float('nan')):.1e})")
  print(f"  first product, tracing included: {first[True]:.2f} s with the check, "
        f"{first[False]:.2f} s without")


def per_layer_vs_full(model, data, k):
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  op = timed_matvecs(tfs.HessianOperator(model, loss, data))
  tfs.top_eigenpairs(op, k=k, tol=1e-3, seed=0)  # warm-up (tracing, fallback)
  op.seconds, n0 = 0.0, op.num_matvecs
  t = time.perf_counter()
  full = tfs.top_eigenpairs(op, k=k, tol=1e-3, seed=0)
  full_s, full_hvps = time.perf_counter() - t, op.num_matvecs - n0
  blocks = blocks_lib.variable_blocks(model, "layer")
  t, n0 = time.perf_counter(), op.num_matvecs
  for i, block in enumerate(blocks):
    sub = blocks_lib.BlockOperator(op, block)
    tfs.top_eigenpairs(sub, k=min(k, sub.dim), tol=1e-3, seed=i)
  blocks_s, blocks_hvps = time.perf_counter() - t, op.num_matvecs - n0
  print(f"  full top-{k}: {full_s:.2f} s, {full_hvps} HVPs (lambda_max "
        f"{full.eigenvalues[0]:.4g})")
  print(f"  per-layer pass ({len(blocks)} blocks, top-{k} each): {blocks_s:.2f} s, "
        f"{blocks_hvps} HVPs = {blocks_s / full_s:.2f}x the full top-{k} in time, "
        f"{blocks_hvps / full_hvps:.2f}x in HVPs")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--examples", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--k", type=int, default=3)
  args = p.parse_args()
  print_machine()
  rng = np.random.default_rng(0)
  x = rng.integers(0, VOCAB, (args.examples, LENGTH)).astype("int32")
  y = rng.integers(0, CLASSES, args.examples)
  for build in (transformer, lstm):
    keras.utils.set_random_seed(0)
    model = build()
    model(x[:1])
    print(f"{model.name}: {model.count_params():,} parameters, {args.examples} examples "
          f"of {LENGTH} tokens")
    hvp_vs_gradient(model, (x, y), args.repeats)
    self_check_cost(model, (x, y), args.repeats)
    per_layer_vs_full(model, (x, y), args.k)


if __name__ == "__main__":
  main()
