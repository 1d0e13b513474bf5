"""Moments whose second derivative is right, for the passes that take one.

``tf.nn.moments`` computes the variance around a stopped mean,

    var(x) = mean((x - stop_gradient(mean(x)))^2).

Its value and its first derivative are those of the variance (the term that
``stop_gradient`` drops, d var / d mean = -2 mean(x - mean(x)), is zero), but
its second derivative is not: the dropped term's own derivative,
2 (d mean)^2, is missing.  Keras 3's TensorFlow backend computes
``keras.ops.moments`` with it, so every ``LayerNormalization``,
``GroupNormalization`` and training-mode ``BatchNormalization`` (and any
layer built on ``ops.moments`` or on ``tf.nn.moments``) has a wrong Hessian
under ``tf.GradientTape``, in forward-over-reverse and reverse-over-reverse
alike (both apply the same rule, so they agree with each other).

``exact_moments()`` is a context manager that, while it is active, replaces
``tf.nn.moments`` by the same statistics without the ``stop_gradient``:

    mean = mean(x),   var = mean((x - mean)^2),

identical in value and in first derivative, exact in every derivative.  The
curvature passes (``LossEvaluator`` and the operators built on it) trace
their graphs inside it, so their products are exact through these layers;
the user's model, and what ``model.fit`` trains, are untouched: only graphs
traced inside the context see the replacement, and it is restored on exit.
Nested and concurrent uses are counted, so the original is restored when the
last one exits.
"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

__all__ = ["exact_moments", "moments"]

_lock = threading.RLock()
_depth = 0
_original = None


def moments(x, axes, shift=None, keepdims=False, name=None):
  """``tf.nn.moments`` with an exact second derivative (same signature;
  ``shift`` is unused there too).  float16 is computed in float32, as
  ``tf.nn.moments`` does."""
  del shift
  with tf.name_scope(name or "moments"):
    x = tf.convert_to_tensor(x)
    y = tf.cast(x, tf.float32) if x.dtype == tf.float16 else x
    mean = tf.reduce_mean(y, axes, keepdims=True, name="mean")
    variance = tf.reduce_mean(tf.math.squared_difference(y, mean), axes,
                              keepdims=True, name="variance")
    if not keepdims:
      mean = tf.squeeze(mean, axes)
      variance = tf.squeeze(variance, axes)
    if x.dtype == tf.float16:
      return tf.cast(mean, tf.float16), tf.cast(variance, tf.float16)
    return mean, variance


@contextlib.contextmanager
def exact_moments():
  """While active, ``tf.nn.moments`` is ``moments`` above (see the module doc)."""
  global _depth, _original
  with _lock:
    if _depth == 0:
      _original = tf.nn.moments
      tf.nn.moments = moments
    _depth += 1
  try:
    yield
  finally:
    with _lock:
      _depth -= 1
      if _depth == 0:
        tf.nn.moments = _original
        _original = None
