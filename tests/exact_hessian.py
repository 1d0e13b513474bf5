"""Ground truth for the tests: the exact Hessian of a small Keras model's loss,
built with nested GradientTape jacobians over the flat parameter vector."""

import contextlib

import keras
import numpy as np
import tensorflow as tf


@contextlib.contextmanager
def keras_dtype(dtype):
  """Builds layers in ``dtype`` (floatx and the global dtype policy)."""
  old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
  keras.config.set_floatx(dtype)
  keras.config.set_dtype_policy(dtype)
  try:
    yield
  finally:
    keras.config.set_floatx(old_floatx)
    keras.config.set_dtype_policy(old_policy)


def exact_hessian(model, loss_fn, x, y, *, training=False,
                  include_regularization=True) -> np.ndarray:
  params = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
  shapes = [p.shape for p in params]
  sizes = [int(np.prod(s)) for s in shapes]
  flat = tf.concat([tf.reshape(p, [-1]) for p in params], 0)
  non_trainable = [v.value for v in model.non_trainable_variables]

  def loss_of(theta):
    parts = [tf.reshape(t, s) for t, s in zip(tf.split(theta, sizes), shapes)]
    y_pred, _, losses = model.stateless_call(
        parts, non_trainable, x, training=training, return_losses=True)
    loss = loss_fn(y, y_pred)
    if include_regularization and losses:
      loss += tf.add_n(losses)
    return loss

  with tf.GradientTape() as outer:
    outer.watch(flat)
    with tf.GradientTape() as inner:
      inner.watch(flat)
      loss = loss_of(flat)
    grad = inner.gradient(loss, flat)
  hess = outer.jacobian(grad, flat).numpy()
  return 0.5 * (hess + hess.T)


def small_models(input_shape, num_classes=10, dtype="float64"):
  """An MLP, a CNN and a CNN with BatchNorm and L2, each of a few thousand
  parameters, seeded, with every layer in ``dtype``."""
  with keras_dtype(dtype):
    return _small_models(input_shape, num_classes, dtype)


def _small_models(input_shape, num_classes, dtype):
  L = keras.layers
  keras.utils.set_random_seed(1)
  mlp = keras.Sequential([keras.Input(input_shape, dtype=dtype), L.Flatten(),
                          L.Dense(12, activation="tanh", dtype=dtype),
                          L.Dense(num_classes, dtype=dtype)], name="mlp")
  cnn = keras.Sequential([
      keras.Input(input_shape, dtype=dtype),
      L.Conv2D(6, 3, activation="relu", dtype=dtype), L.MaxPooling2D(2),
      L.Flatten(), L.Dense(num_classes, dtype=dtype)], name="cnn")
  bn = keras.Sequential([
      keras.Input(input_shape, dtype=dtype),
      L.Conv2D(4, 3, kernel_regularizer=keras.regularizers.L2(1e-3), dtype=dtype),
      L.BatchNormalization(dtype=dtype), L.Activation("softplus", dtype=dtype),
      L.GlobalAveragePooling2D(dtype=dtype), L.Dense(num_classes, dtype=dtype)],
      name="bn")
  return {"mlp": mlp, "cnn": cnn, "bn": bn}
