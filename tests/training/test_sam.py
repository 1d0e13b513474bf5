"""SAM and ASAM against a numpy reference of the papers' two-step rule, on a
linear model with 0.5 ||W x + b - y||^2 (gradients in closed form): in
model.fit (also under MirroredStrategy, per-replica perturbations), saved
and loaded, and in our loop's TrainStep."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from exact_hessian import keras_dtype
from tf_sharpness import config as config_lib
from tf_sharpness import sam
from tf_sharpness.errors import ConfigError
from tf_sharpness.train_step import TrainStep

RNG = np.random.default_rng(0)
X, Y = RNG.normal(size=(16, 4)), RNG.normal(size=(16, 2))


def half_mse(y, p):
  return 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(p - y), axis=-1))


def gradient(w, b, x=X, y=Y):
  r = x @ w + b - y
  return x.T @ r / len(x), r.sum(0) / len(x)


def reference(w, b, lr, rho, adaptive=False, eta=0.01, shards=1):
  """One SGD step on the gradient at w + e; with shards, each shard
  perturbs with its own gradient and the shard gradients are averaged."""
  steps = []
  for x, y in zip(np.array_split(X, shards), np.array_split(Y, shards)):
    gw, gb = gradient(w, b, x, y)
    tw, tb = (np.abs(w) + eta, np.abs(b) + eta) if adaptive else (1.0, 1.0)
    norm = np.sqrt(np.sum((tw * gw) ** 2) + np.sum((tb * gb) ** 2))
    ew, eb = rho * tw ** 2 * gw / norm, rho * tb ** 2 * gb / norm
    steps.append(gradient(w + ew, b + eb, x, y))
  gw = np.mean([s[0] for s in steps], axis=0)
  gb = np.mean([s[1] for s in steps], axis=0)
  return w - lr * gw, b - lr * gb


def linear(seed=0):
  keras.utils.set_random_seed(seed)
  with keras_dtype("float64"):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  model.layers[0].bias.assign([0.3, -0.2])
  return model


def weights(model):
  return model.layers[0].kernel.numpy(), model.layers[0].bias.numpy()


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_in_model_fit_is_the_two_step_rule(adaptive):
  inner = linear()
  w, b = weights(inner)
  with keras_dtype("float64"):  # fit and compiled losses cast to floatx
    model = sam.SAM(inner, rho=0.3, adaptive=adaptive)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=half_mse)
    model.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
  ref_w, ref_b = reference(w, b, 0.5, 0.3, adaptive=adaptive)
  np.testing.assert_allclose(weights(inner)[0], ref_w, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(weights(inner)[1], ref_b, rtol=1e-10, atol=1e-12)
  plain_w = w - 0.5 * gradient(w, b)[0]
  assert np.abs(weights(inner)[0] - plain_w).max() > 1e-3  # not plain SGD


def test_sam_under_mirrored_strategy_perturbs_per_replica():
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope(), keras_dtype("float64"):
    inner = linear()
    w, b = weights(inner)
    model = sam.SAM(inner, rho=0.3)
    # a Loss object: Keras divides it by the replicas (a plain function it
    # does not, which doubles the step of plain fit too); with 2 outputs,
    # MSE is 0.5 ||f - y||^2
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.MeanSquaredError())
    model.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
  ref_w, ref_b = reference(w, b, 0.5, 0.3, shards=2)
  np.testing.assert_allclose(weights(inner)[0], ref_w, rtol=1e-9, atol=1e-12)
  whole_w, _ = reference(w, b, 0.5, 0.3, shards=1)
  assert np.abs(ref_w - whole_w).max() > 1e-6  # per-replica e is another rule


def test_sam_saves_and_loads(tmp_path):
  model = sam.SAM(linear(), rho=0.2, adaptive=True, eta=0.05)
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss=half_mse)
  model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
  path = str(tmp_path / "sam.keras")
  model.save(path)
  loaded = keras.models.load_model(path, custom_objects={"half_mse": half_mse})
  assert isinstance(loaded, sam.SAM)
  assert (loaded.rho, loaded.adaptive, loaded.eta) == (0.2, True, 0.05)
  np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
  with pytest.raises(ValueError, match="rho must be a positive number"):
    sam.SAM(linear(), rho=0)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_in_our_loop_is_the_two_step_rule(adaptive):
  model = linear()
  w, b = weights(model)
  per_example = lambda y, p: 0.5 * tf.reduce_sum(tf.square(p - y), axis=-1)
  step = TrainStep(model, keras.optimizers.SGD(0.5), per_example, sam_rho=0.3,
                   sam_adaptive=adaptive)
  out = step(X, Y)
  ref_w, ref_b = reference(w, b, 0.5, 0.3, adaptive=adaptive)
  np.testing.assert_allclose(weights(model)[0], ref_w, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(weights(model)[1], ref_b, rtol=1e-10, atol=1e-12)
  r = X @ w + b - Y
  assert float(out.loss) == pytest.approx(0.5 * np.mean(np.sum(r * r, 1)), rel=1e-12)


def test_sam_flags_are_validated():
  with pytest.raises(ConfigError, match="`sam_adaptive` needs `sam_rho`"):
    config_lib.Config(sam_adaptive=True).validate()
  with pytest.raises(ConfigError, match="`sam_rho` must be >= 0"):
    config_lib.Config(sam_rho=-1.0).validate()
