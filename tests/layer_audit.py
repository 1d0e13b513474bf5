"""Second-order audit of Keras 3's layers, activations and losses.

Each case is a small float64 model (a few hundred parameters) around one
family.  Its Hessian-vector products are compared, on three random vectors,
with the dense Hessian from central differences of exact gradients
(``exact_hessian``): ours (``HessianOperator``, the method it settles on)
and TensorFlow's own second-derivative rules (nested tapes), so the table
shows both which families TensorFlow differentiates wrongly twice and that
ours are right.  ``tests/curvature/test_second_order_audit.py`` runs every case;

    python tests/layer_audit.py

prints the table of docs/second_order_audit.md.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from exact_hessian import exact_hessian, keras_dtype, nested_tape_hessian

L = keras.layers
N = 16  # examples


@dataclasses.dataclass
class Case:
  kind: str  # "layer", "activation" or "loss"
  build: Callable  # rng -> (model, x, y, loss, training)


def _xent():
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _layer(inputs: tuple, *body, tokens: int | None = None, training: bool = False):
  """Input -> body -> Flatten -> Dense(3), sparse cross-entropy from logits."""
  def build(rng):
    if tokens:
      x = rng.integers(0, tokens, (N,) + inputs).astype("int32")
      inp = keras.Input(inputs, dtype="int32")
    else:
      x = rng.normal(size=(N,) + inputs)
      inp = keras.Input(inputs)
    h = inp
    for make in body:
      h = make()(h)
    if len(h.shape) > 2:
      h = L.Flatten()(h)
    model = keras.Model(inp, L.Dense(3)(h))
    return model, x, rng.integers(0, 3, N), _xent(), training
  return build


def _attention(rng):
  x = rng.integers(0, 10, (N, 4)).astype("int32")
  inp = keras.Input((4,), dtype="int32")
  h = L.Embedding(10, 4)(inp)
  h = L.MultiHeadAttention(2, 2)(h, h)
  model = keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling1D()(h)))
  return model, x, rng.integers(0, 3, N), _xent(), False


LAYERS = {
    "Dense": _layer((5,), lambda: L.Dense(6, activation="tanh")),
    "Conv1D": _layer((6, 2), lambda: L.Conv1D(3, 3, activation="tanh")),
    "Conv2D": _layer((5, 5, 2), lambda: L.Conv2D(3, 3, activation="tanh")),
    "Conv3D": _layer((4, 4, 4, 1), lambda: L.Conv3D(2, 2, activation="tanh")),
    "DepthwiseConv2D": _layer((5, 5, 2), lambda: L.DepthwiseConv2D(3, activation="tanh")),
    "SeparableConv2D": _layer((5, 5, 2), lambda: L.SeparableConv2D(3, 3, activation="tanh")),
    "Conv2DTranspose": _layer((3, 3, 2), lambda: L.Conv2DTranspose(2, 2, activation="tanh")),
    "MaxPooling2D": _layer((6, 6, 2), lambda: L.Conv2D(3, 3, activation="tanh"),
                           lambda: L.MaxPooling2D(2)),
    "AveragePooling2D": _layer((6, 6, 2), lambda: L.Conv2D(3, 3, activation="tanh"),
                               lambda: L.AveragePooling2D(2)),
    "Embedding": _layer((4,), lambda: L.Embedding(10, 3), tokens=10),
    "LSTM": _layer((4, 2), lambda: L.LSTM(3)),
    "GRU": _layer((4, 2), lambda: L.GRU(3)),
    "SimpleRNN": _layer((4, 2), lambda: L.SimpleRNN(3)),
    "Bidirectional(LSTM)": _layer((4, 2), lambda: L.Bidirectional(L.LSTM(2))),
    "MultiHeadAttention": _attention,
    "LayerNormalization": _layer((5,), lambda: L.Dense(6), L.LayerNormalization,
                                 lambda: L.Activation("tanh")),
    "GroupNormalization": _layer((5,), lambda: L.Dense(6),
                                 lambda: L.GroupNormalization(groups=2),
                                 lambda: L.Activation("tanh")),
    "BatchNormalization (moving statistics)": _layer(
        (5,), lambda: L.Dense(6), L.BatchNormalization, lambda: L.Activation("tanh")),
    "BatchNormalization (batch statistics)": _layer(
        (5,), lambda: L.Dense(6), L.BatchNormalization, lambda: L.Activation("tanh"),
        training=True),
    "RMSNormalization": _layer((5,), lambda: L.Dense(6), L.RMSNormalization,
                               lambda: L.Activation("tanh")),
    "UnitNormalization": _layer((5,), lambda: L.Dense(6), L.UnitNormalization,
                                lambda: L.Activation("tanh")),
    "Dropout (off)": _layer((5,), lambda: L.Dense(6, activation="tanh"),
                            lambda: L.Dropout(0.5)),
}

_ACTIVATIONS = {
    "relu": "relu", "gelu (exact)": lambda x: keras.activations.gelu(x, approximate=False),
    "gelu (tanh approximation)": lambda x: keras.activations.gelu(x, approximate=True),
    "silu": "silu", "elu": "elu", "selu": "selu", "softplus": "softplus",
    "softmax": "softmax", "log_softmax": "log_softmax", "tanh": "tanh",
    "sigmoid": "sigmoid", "hard_sigmoid": "hard_sigmoid", "relu6": "relu6",
}
ACTIVATIONS = {name: _layer((5,), lambda a=a: L.Dense(6, activation=a))
               for name, a in _ACTIVATIONS.items()}


def _loss(make_loss, head: str | None, target: str):
  """Input -> tanh Dense -> Dense(3) [-> head activation], with ``target``
  labels: "sparse" classes, "onehot", "binary" {0, 1}, "real" values or
  "probabilities"."""
  def build(rng):
    x = rng.normal(size=(N, 5))
    inp = keras.Input((5,))
    out = L.Dense(3, activation=head)(L.Dense(6, activation="tanh")(inp))
    classes = rng.integers(0, 3, N)
    y = {"sparse": classes,
         "onehot": np.eye(3)[classes],
         "binary": rng.integers(0, 2, (N, 3)).astype("float64"),
         "real": rng.normal(size=(N, 3)),
         "probabilities": np.exp(p := rng.normal(size=(N, 3))) / np.exp(p).sum(1, keepdims=True),
         }[target]
    return keras.Model(inp, out), x, y, make_loss(), False
  return build


LOSSES = {
    "SparseCategoricalCrossentropy (logits)": _loss(_xent, None, "sparse"),
    "SparseCategoricalCrossentropy (probabilities)": _loss(
        keras.losses.SparseCategoricalCrossentropy, "softmax", "sparse"),
    "CategoricalCrossentropy (logits)": _loss(
        lambda: keras.losses.CategoricalCrossentropy(from_logits=True), None, "onehot"),
    "CategoricalCrossentropy (probabilities)": _loss(
        keras.losses.CategoricalCrossentropy, "softmax", "onehot"),
    "BinaryCrossentropy (logits)": _loss(
        lambda: keras.losses.BinaryCrossentropy(from_logits=True), None, "binary"),
    "BinaryCrossentropy (probabilities)": _loss(
        keras.losses.BinaryCrossentropy, "sigmoid", "binary"),
    "MeanSquaredError": _loss(keras.losses.MeanSquaredError, None, "real"),
    "MeanAbsoluteError": _loss(keras.losses.MeanAbsoluteError, None, "real"),
    "Huber": _loss(lambda: keras.losses.Huber(delta=0.5), None, "real"),
    "KLDivergence": _loss(keras.losses.KLDivergence, "softmax", "probabilities"),
    "CosineSimilarity": _loss(keras.losses.CosineSimilarity, None, "real"),
    "BinaryFocalCrossentropy": _loss(
        lambda: keras.losses.BinaryFocalCrossentropy(from_logits=True), None, "binary"),
    "CategoricalFocalCrossentropy": _loss(
        lambda: keras.losses.CategoricalFocalCrossentropy(from_logits=True), None, "onehot"),
}

CASES = {**{k: Case("layer", b) for k, b in LAYERS.items()},
         **{k: Case("activation", b) for k, b in ACTIVATIONS.items()},
         **{k: Case("loss", b) for k, b in LOSSES.items()}}


def audit(name: str, seed: int = 0) -> dict:
  """One case: the relative error of H v (worst of three random vectors) by
  ours and by nested tapes against differences of exact gradients."""
  import tf_sharpness as tfs
  keras.utils.set_random_seed(seed)
  with keras_dtype("float64"):
    model, x, y, loss, training = CASES[name].build(np.random.default_rng(seed))
    reference = exact_hessian(model, loss, x, y, training=training)
    tape = nested_tape_hessian(model, loss, x, y, training=training)
    op = tfs.HessianOperator(model, loss, (x, y), training=training)
    rng = np.random.default_rng(seed + 1)
    ours_err = tape_err = 0.0
    for _ in range(3):
      v = rng.normal(size=op.dim)
      exact = reference @ v
      scale = max(np.linalg.norm(exact), 1e-12)
      hv = tfs.flatten(op.matvec(tfs.unflatten(v, op.shapes))).numpy()
      ours_err = max(ours_err, np.linalg.norm(hv - exact) / scale)
      tape_err = max(tape_err, np.linalg.norm(tape @ v - exact) / scale)
  definition = op.hessian_definition()
  return {"name": name, "kind": CASES[name].kind, "parameters": op.dim,
          "ours": float(ours_err), "tensorflow": float(tape_err),
          "method": definition["hvp_method"], "fd_check": definition["fd_check"],
          "hessian_norm": float(np.linalg.norm(reference, 2))}


def status(row: dict, tol: float = 1e-6) -> str:
  if row["ours"] > tol:
    return "WRONG"
  if row["tensorflow"] > tol:
    return "exact (TensorFlow's own rule is wrong: fixed by exact_moments)"
  return "exact"


def table(rows) -> str:
  lines = ["| family | kind | status | ours: relative error | TensorFlow's nested tapes | "
           "method | self-check | parameters |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    lines.append(f"| {r['name']} | {r['kind']} | {status(r)} | {r['ours']:.1e} | "
                 f"{r['tensorflow']:.1e} | {r['method']} | {r['fd_check']} | "
                 f"{r['parameters']} |")
  return "\n".join(lines)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  rows = []
  for case in CASES:
    rows.append(audit(case))
    print(f"{case}: {status(rows[-1])} ({rows[-1]['ours']:.1e})", file=sys.stderr, flush=True)
  print(table(rows))
