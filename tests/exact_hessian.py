"""Ground truth for the tests: the exact Hessian of a small float64 Keras
model's loss, from central differences of exact (first-order) gradients
over the flat parameter vector: no second-derivative rule of TensorFlow's
enters it, so it cannot repeat one of their errors."""

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


class ReferenceError_(AssertionError):
  """The difference-of-gradients reference could not be made consistent."""


def _flat_loss(model, loss_fn, x, y, training, include_regularization):
  """(theta0, loss_of(theta)) over the flat float parameter vector."""
  params = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
  shapes = [p.shape for p in params]
  sizes = [int(np.prod(s)) for s in shapes]
  theta0 = np.concatenate([np.ravel(p.numpy()) for p in params]).astype(np.float64)
  non_trainable = [v.value for v in model.non_trainable_variables]

  def loss_of(theta):
    parts = [tf.reshape(t, s) for t, s in zip(tf.split(theta, sizes), shapes)]
    y_pred, _, losses = model.stateless_call(
        parts, non_trainable, x, training=training, return_losses=True)
    loss = loss_fn(y, y_pred)
    if include_regularization and losses:
      loss += tf.add_n(losses)
    return loss
  return theta0, loss_of, params[0].dtype


def exact_hessian(model, loss_fn, x, y, *, training=False,
                  include_regularization=True, step=1e-5) -> np.ndarray:
  """The dense Hessian from central differences of exact gradients.

  Column i is the derivative of the (first-order, reverse-mode) gradient
  along e_i by Richardson's extrapolation of two central differences,

      D(h) = (g(theta + h e_i) - g(theta - h e_i)) / 2h,
      H e_i = (4 D(h) - D(2h)) / 3 + O(h^4),

  so no second-derivative rule of TensorFlow enters: the reference cannot
  share an error of ours in them (``tf.nn.moments`` has one).  Where D(h)
  and D(2h) disagree by more than their truncation error allows, the
  difference crossed a kink (ReLU, max pooling) and the column is redone
  with a 10x smaller step, up to four times.  Needs float64 parameters.
  """
  theta0, loss_of, dtype = _flat_loss(model, loss_fn, x, y, training,
                                      include_regularization)
  if dtype != tf.float64:
    raise ValueError("exact_hessian needs a float64 model (differences of gradients)")

  @tf.function(autograph=False)
  def grads(thetas):  # [B, P] -> [B, P], one gradient per row
    out = []
    for i in range(thetas.shape[0]):
      theta = thetas[i]
      with tf.GradientTape() as tape:
        tape.watch(theta)
        loss = loss_of(theta)
      out.append(tape.gradient(loss, theta,
                               unconnected_gradients=tf.UnconnectedGradients.ZERO))
    return tf.stack(out)

  n = theta0.size
  hess = np.zeros((n, n))
  chunk = 4
  todo = [(i, step * max(1.0, abs(theta0[i]))) for i in range(n)]
  for attempt in range(5):
    redo = []
    for lo in range(0, len(todo), chunk):
      part = todo[lo:lo + chunk]
      rows = []
      for i, h in part:
        for s in (h, -h, 2 * h, -2 * h):
          t = theta0.copy()
          t[i] += s
          rows.append(t)
      g = grads(tf.constant(np.stack(rows))).numpy().reshape(len(part), 4, n)
      for (i, h), gi in zip(part, g):
        d1 = (gi[0] - gi[1]) / (2 * h)
        d2 = (gi[2] - gi[3]) / (4 * h)
        scale = max(np.max(np.abs(d1)), 1e-4)
        if np.max(np.abs(d1 - d2)) <= 1e-5 * scale:
          hess[:, i] = (4 * d1 - d2) / 3
        else:
          redo.append((i, h / 10))
    todo = redo
    if not todo:
      break
  if todo:
    raise ReferenceError_(f"difference of gradients inconsistent in {len(todo)} of {n} "
                          "columns at every step down to h/10^4 (a kink at theta?)")
  return 0.5 * (hess + hess.T)


def nested_tape_hessian(model, loss_fn, x, y, *, training=False,
                        include_regularization=True) -> np.ndarray:
  """The Hessian by TensorFlow's own second-derivative rules (nested tapes):
  for printing beside ``exact_hessian``, never as the only reference (it
  repeats TensorFlow's errors, e.g. through ``tf.nn.moments``)."""
  theta0, loss_of, _ = _flat_loss(model, loss_fn, x, y, training, include_regularization)
  flat = tf.constant(theta0.astype(model.trainable_variables[0].dtype))
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
