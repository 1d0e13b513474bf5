"""The HessianOperator's self-check against a difference of gradients: a
custom layer that hides a stop_gradient in its forward pass is caught (the
measurement then equals the difference-of-gradients answer), in the operator
and through SpectrumCallback, in float64 and float32; a ReLU network sitting
on a kink keeps its exact method; every record carries the outcome."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sharpness as tfs
from exact_hessian import exact_hessian, keras_dtype

L = keras.layers


class StoppedMeanNorm(L.Layer):
  """(x - mean) / sqrt(var + eps) with the variance around a stopped mean:
  the same function as a parameter-free LayerNormalization, whose second
  derivative TensorFlow's rules get wrong."""

  def call(self, x):
    mean = tf.reduce_mean(x, -1, keepdims=True)
    var = tf.reduce_mean(tf.square(x - tf.stop_gradient(mean)), -1, keepdims=True)
    return (x - mean) / tf.sqrt(var + 1e-3)


def _model(norm, dtype="float64"):
  with keras_dtype(dtype):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), L.Dense(16, activation="tanh"), norm(),
                              L.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _data(n=64):
  rng = np.random.default_rng(0)
  return rng.normal(size=(n, 8)), rng.integers(0, 3, n)


def _loss(dtype="float64"):
  with keras_dtype(dtype):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_a_stop_gradient_layer_is_caught_and_measured_right(caplog):
  model, (x, y) = _model(StoppedMeanNorm), _data()
  h = exact_hessian(model, _loss(), x, y)
  op = tfs.HessianOperator(model, _loss(), (x, y))
  v = np.random.default_rng(1).normal(size=op.dim)
  with caplog.at_level("WARNING", logger="tf_sharpness"):
    hv = tfs.flatten(op.matvec(tfs.unflatten(v, op.shapes))).numpy()
  definition = op.hessian_definition()
  assert definition["fd_check"] == "disagrees"
  assert definition["fd_check_relative_error"] > 1e-2  # what the exact rule got wrong
  assert definition["hvp_method"] == "finite_difference"
  lines = [r.getMessage() for r in caplog.records if "differs from a difference" in r.getMessage()]
  assert len(lines) == 1 and "\n" not in lines[0]
  assert re.search(r"parameters of layer 'dense(_\d+)?' \(Dense\)", lines[0]), lines[0]
  # the first product itself is already the right one
  assert np.linalg.norm(hv - h @ v) / np.linalg.norm(h @ v) < 1e-6
  top = tfs.top_eigenpairs(op, k=2, tol=1e-10)
  np.testing.assert_allclose(top.eigenvalues, np.linalg.eigvalsh(h)[::-1][:2], rtol=1e-6)


def test_the_callback_catches_it_and_every_record_carries_the_check():
  model, (x, y) = _model(StoppedMeanNorm), _data()
  cb = tfs.SpectrumCallback(None, (x, y), every=1, k=2, tol=1e-10, num_iters=200,
                            verbose=False)
  model.fit(x, y, batch_size=32, epochs=1, callbacks=[cb], verbose=0, shuffle=False)
  assert len(cb.records) == 3
  for rec in cb.records:
    assert rec["hessian_definition"]["fd_check"] == "disagrees"
    assert rec["hessian_definition"]["fd_check_relative_error"] > 1e-2
    assert rec["hessian_definition"]["hvp_method"] == "finite_difference"
  h = exact_hessian(model, _loss(), x, y)
  np.testing.assert_allclose(cb.records[-1]["top_eigenvalues"],
                             np.linalg.eigvalsh(h)[::-1][:2], rtol=1e-6)


def test_float32_is_caught_too():
  """In float32 the reference is consistent to ~1e-5 here, so a wrong rule
  that moves H r by 0.2-4% is told from rounding."""
  model, (x, y) = _model(StoppedMeanNorm, "float32"), _data(128)
  op = tfs.HessianOperator(model, _loss("float32"), (x.astype("float32"), y))
  op.matvec([tf.zeros(s) for s in op.shapes])
  d = op.hessian_definition()
  assert d["fd_check"] == "disagrees" and d["hvp_method"] == "finite_difference", d
  ok = _model(L.LayerNormalization, "float32")
  op = tfs.HessianOperator(ok, _loss("float32"), (x.astype("float32"), y))
  op.matvec([tf.zeros(s) for s in op.shapes])
  d = op.hessian_definition()
  assert d["fd_check"] == "agrees" and d["hvp_method"] == "forward_over_reverse", d


def test_a_relu_network_on_a_kink_keeps_its_exact_method():
  """Zero weights and biases put every ReLU exactly on its kink: the
  difference of gradients grows as 1/h there, the two steps disagree, and
  the check is inconclusive and changes nothing."""
  with keras_dtype("float64"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)), L.Dense(16, activation="relu", kernel_initializer="zeros"),
        L.Dense(3)])
  x, y = _data()
  op = tfs.HessianOperator(model, _loss(), (x, y))
  op.matvec([tf.zeros(s, tf.float64) for s in op.shapes])
  d = op.hessian_definition()
  assert d["fd_check"].startswith("inconclusive"), d
  assert d["fd_check_spread"] > 1e-4
  assert d["hvp_method"] == "forward_over_reverse"


def test_the_check_can_be_turned_off_and_costs_are_counted():
  model, (x, y) = _model(L.LayerNormalization), _data()
  off = tfs.HessianOperator(model, _loss(), (x, y), self_check=False)
  off.matvec([tf.zeros(s, tf.float64) for s in off.shapes])
  assert off.hessian_definition()["fd_check"] == "off"
  assert off.hessian_definition()["fd_check_relative_error"] is None
  assert off.num_matvecs == 1
  on = tfs.HessianOperator(model, _loss(), (x, y))
  assert on.hessian_definition()["fd_check"] == "not made"
  on.matvec([tf.zeros(s, tf.float64) for s in on.shapes])
  d = on.hessian_definition()
  assert d["fd_check"] == "agrees" and d["fd_check_relative_error"] < 1e-7
  assert on.num_matvecs == 4  # the product, H r and two differences of gradients


def test_a_checkpoint_from_before_the_check_record_still_restores(tmp_path):
  """Runs saved before the self-check was checkpointed resume (the check is
  made again); any other object missing from a checkpoint is still an error."""
  from tf_sharpness import probes as P
  from tf_sharpness.probes.base import restore_checkpoint
  old = tf.train.Checkpoint(probes=tf.train.Checkpoint(
      eigen_tracker=tf.train.Checkpoint(v=tf.Variable(1.0))))
  path = old.save(str(tmp_path / "old"))
  subset = P.HessianSubset(None, None, lambda step, repeat: None)
  restored = tf.Variable(0.0)
  new = tf.train.Checkpoint(probes=tf.train.Checkpoint(
      eigen_tracker=tf.train.Checkpoint(v=restored),
      hessian_subset=tf.train.Checkpoint(**subset.state())))
  restore_checkpoint(new, path)
  assert float(restored.numpy()) == 1.0 and subset.fd_check.numpy() == b""
  other = tf.train.Checkpoint(probes=tf.train.Checkpoint(
      eigen_tracker=tf.train.Checkpoint(v=tf.Variable(0.0), w=tf.Variable(0.0))))
  with pytest.raises(AssertionError):
    restore_checkpoint(other, path)
