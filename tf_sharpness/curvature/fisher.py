"""The empirical Fisher matrix as a curvature operator.

    F = (1/N) sum_n g_n g_n^T,   g_n = d l(y_n, f(x_n; theta)) / d theta,

so F v = (1/N) sum_n g_n (g_n^T v).  All N directional derivatives g_n^T v
come from one forward pass with tangent v (forward mode on the vector of
per-example losses); F v is then one backward pass of the per-example losses
weighted by them.  No per-example gradients are ever stored.
"""

from __future__ import annotations

import tensorflow as tf

from tf_sharpness.curvature.compiled_loss import CompiledLoss
from tf_sharpness.curvature.hvp import HessianOperator


class FisherOperator(HessianOperator):
  """Empirical Fisher over ``data``.

  ``per_example_loss_fn(y_true, y_pred)`` must return one loss per example
  (shape [batch]), e.g. a Keras loss built with ``reduction=None``.  Other
  arguments as for ``HessianOperator``; regularization is not included.
  """

  def __init__(self, model, per_example_loss_fn, data, **kwargs):
    if isinstance(per_example_loss_fn, CompiledLoss):
      raise ValueError("per_example_loss_fn: the Fisher needs per-example losses of the "
                       f"outputs, not {per_example_loss_fn.name}")
    kwargs["include_regularization"] = False
    self.per_example_loss_fn = per_example_loss_fn
    mean = lambda y, p: tf.reduce_mean(per_example_loss_fn(y, p))
    super().__init__(model, mean, data, **kwargs)

  def _per_example(self, y, y_pred):
    losses = tf.cast(self.per_example_loss_fn(y, y_pred), self.dtype)
    if losses.shape.rank != 1:
      raise ValueError("FisherOperator needs per-example losses of shape [batch]"
                       f", got shape {losses.shape}; build the Keras loss with "
                       "reduction=None")
    return losses

  def _batch_hvp(self, x, y, v):
    params = self._read_params()
    with tf.GradientTape() as tape:
      tape.watch(params)
      with tf.autodiff.ForwardAccumulator(params, v) as acc:
        z, _ = self._outputs(params, x)
        losses = self._per_example(y, z)
      dots = acc.jvp(losses, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    n = tf.cast(tf.shape(losses)[0], self.dtype)
    fv = tape.gradient(losses, params,
                       output_gradients=tf.stop_gradient(dots) / n,
                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return tf.reduce_mean(losses), [], fv
