"""Small float64 models of each Keras layer family, for exact tests.

``FAMILIES[name]()`` returns a ``Family``: a compiled model small enough for
a dense Hessian (a few hundred parameters), its data, and the ground-truth
loss ``exact_loss(y, y_pred)`` written independently of Keras' compile
machinery (for a multi-output model, the loss_weights sum by hand).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from exact_hessian import keras_dtype

L = keras.layers
N = 24  # examples


@dataclasses.dataclass
class Family:
  model: keras.Model
  x: object
  y: object
  exact_loss: Callable
  training: bool = False  # the mode the Hessian is taken in


def _xent(y, p):
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), p))


def _compile(model, loss=None, **kw):
  model.compile(optimizer=keras.optimizers.SGD(0.05),
                loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                **kw)
  return model


def _tokens(rng):
  return rng.integers(0, 12, (N, 5)).astype("int32"), rng.integers(0, 3, N)


def _sequences(rng):
  return rng.normal(size=(N, 5, 3)), rng.integers(0, 3, N)


def embedding(rng):
  x, y = _tokens(rng)
  model = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(12, 4),
                            L.GlobalAveragePooling1D(), L.Dense(3, activation="tanh"),
                            L.Dense(3)])
  return Family(_compile(model), x, y, _xent)


def _rnn(cls):
  def build(rng):
    x, y = _sequences(rng)
    model = keras.Sequential([keras.Input((5, 3)), cls(4), L.Dense(3)])
    return Family(_compile(model), x, y, _xent)
  return build


def attention(rng):
  """A one-block transformer classifier: Embedding, MultiHeadAttention with
  a residual, LayerNormalization, pooling."""
  x, y = _tokens(rng)
  inp = keras.Input((5,), dtype="int32")
  h = L.Embedding(12, 4)(inp)
  h = L.LayerNormalization()(h + L.MultiHeadAttention(2, 2)(h, h))
  out = L.Dense(3)(L.GlobalAveragePooling1D()(h))
  return Family(_compile(keras.Model(inp, out)), x, y, _xent)


def _batchnorm(training):
  def build(rng):
    x, y = rng.normal(size=(N, 6)), rng.integers(0, 3, N)
    model = keras.Sequential([keras.Input((6,)), L.Dense(5), L.BatchNormalization(),
                              L.Activation("tanh"), L.Dense(3)])
    return Family(_compile(model), x, y, _xent, training=training)
  return build


def _normalized(make):
  """Dense -> a normalization layer -> tanh -> Dense: the families whose
  Hessian TensorFlow gets wrong through tf.nn.moments (LayerNormalization,
  GroupNormalization), or right (RMSNormalization, UnitNormalization)."""
  def build(rng):
    x, y = rng.normal(size=(N, 6)), rng.integers(0, 3, N)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8), make(),
                              L.Activation("tanh"), L.Dense(3)])
    return Family(_compile(model), x, y, _xent)
  return build


def dropout(rng):
  x, y = rng.normal(size=(N, 6)), rng.integers(0, 3, N)
  model = keras.Sequential([keras.Input((6,)), L.Dense(6, activation="tanh"),
                            L.Dropout(0.5), L.Dense(3)])
  return Family(_compile(model), x, y, _xent)


def multi_input(rng):
  """Dict inputs (an image-like vector and tokens)."""
  tokens, y = _tokens(rng)
  x = {"features": rng.normal(size=(N, 4)), "tokens": tokens}
  a = keras.Input((4,), name="features")
  b = keras.Input((5,), dtype="int32", name="tokens")
  h = L.Concatenate()([L.Dense(4, activation="tanh")(a),
                       L.GlobalAveragePooling1D()(L.Embedding(12, 3)(b))])
  return Family(_compile(keras.Model({"features": a, "tokens": b}, L.Dense(3)(h))),
                x, y, _xent)


def multi_output(rng):
  """Two heads compiled with a loss dict and loss_weights, plus an L2
  regularizer: the Hessian is of 0.7 xent + 0.3 mse + the penalty."""
  x = rng.normal(size=(N, 6))
  y = {"label": rng.integers(0, 3, N), "value": rng.normal(size=(N, 2))}
  inp = keras.Input((6,))
  h = L.Dense(5, activation="tanh", kernel_regularizer=keras.regularizers.L2(1e-2))(inp)
  model = keras.Model(inp, {"label": L.Dense(3, name="label")(h),
                            "value": L.Dense(2, name="value")(h)})
  weights = {"label": 0.7, "value": 0.3}
  _compile(model, loss={"label": keras.losses.SparseCategoricalCrossentropy(
      from_logits=True), "value": "mse"}, loss_weights=weights)

  def exact(y_true, y_pred):
    mse = tf.reduce_mean(tf.square(y_pred["value"] - y_true["value"]))
    return weights["label"] * _xent(y_true["label"], y_pred["label"]) + weights["value"] * mse
  return Family(model, x, y, exact)


def _two_heads():
  inp = keras.Input((6,))
  h = L.Dense(5, activation="tanh")(inp)
  return keras.Model(inp, [L.Dense(3, name="cls")(h), L.Dense(1, name="reg")(h)])


def list_outputs_loss_dict(rng):
  """List outputs [cls, reg], compiled with a loss dict keyed by the output
  layers' names, given dict labels (as model.fit accepts)."""
  x = rng.normal(size=(N, 6))
  y = {"cls": rng.integers(0, 3, N), "reg": rng.normal(size=(N, 1))}
  model = _compile(_two_heads(), loss={
      "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "reg": "mse"})

  def exact(y_true, y_pred):
    return _xent(y_true["cls"], y_pred[0]) + tf.reduce_mean(
        tf.square(y_pred[1] - y_true["reg"]))
  return Family(model, x, y, exact)


def list_outputs_mixed_labels(rng):
  """List outputs with a list of losses and loss_weights, list labels of
  different shapes and dtypes: (n,) integer classes and an (n, 1) float."""
  x = rng.normal(size=(N, 6))
  y = [rng.integers(0, 3, N).astype("int32"), rng.normal(size=(N, 1))]
  model = _compile(_two_heads(), loss=[
      keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"],
      loss_weights=[0.7, 0.3])

  def exact(y_true, y_pred):
    return 0.7 * _xent(y_true[0], y_pred[0]) + 0.3 * tf.reduce_mean(
        tf.square(y_pred[1] - y_true[1]))
  return Family(model, x, y, exact)


def custom_loss(rng):
  """A plain function as the compiled loss (per-example values)."""
  x, y = rng.normal(size=(N, 6)), rng.integers(0, 3, N)
  loss = lambda t, p: tf.reduce_sum(tf.square(p - tf.one_hot(tf.cast(t, tf.int32), 3,
                                                              dtype=p.dtype)), -1)
  model = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="tanh"), L.Dense(3)])
  return Family(_compile(model, loss=loss), x, y, lambda t, p: tf.reduce_mean(loss(t, p)))


class _HuberModel(keras.Model):
  """Overrides compute_loss: what fit trains on is this, not model.loss."""

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    return _huber(y, y_pred)


def _huber(y, p):
  target = tf.one_hot(tf.cast(y, tf.int32), 3, dtype=p.dtype)
  return tf.reduce_mean(keras.losses.huber(target, p, delta=0.5))


def compute_loss_override(rng):
  x, y = rng.normal(size=(N, 6)), rng.integers(0, 3, N)
  inp = keras.Input((6,))
  out = L.Dense(3)(L.Dense(5, activation="tanh")(inp))
  model = _HuberModel(inp, out)
  return Family(_compile(model, loss="mse"), x, y, _huber)


FAMILIES = {
    "embedding": embedding, "lstm": _rnn(L.LSTM), "gru": _rnn(L.GRU),
    "simple_rnn": _rnn(L.SimpleRNN), "attention": attention,
    "batchnorm_moving": _batchnorm(False), "batchnorm_batch": _batchnorm(True),
    "layernorm": _normalized(L.LayerNormalization),
    "groupnorm": _normalized(lambda: L.GroupNormalization(groups=2)),
    "rmsnorm": _normalized(L.RMSNormalization),
    "unitnorm": _normalized(L.UnitNormalization),
    "dropout": dropout, "multi_input": multi_input, "multi_output": multi_output,
    "list_outputs_loss_dict": list_outputs_loss_dict,
    "list_outputs_mixed_labels": list_outputs_mixed_labels,
    "custom_loss": custom_loss, "compute_loss_override": compute_loss_override,
}


def build(name: str, seed: int = 0) -> Family:
  keras.utils.set_random_seed(seed)
  with keras_dtype("float64"):
    return FAMILIES[name](np.random.default_rng(seed))
