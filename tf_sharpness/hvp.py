"""The Hessian of a Keras model's mean training loss as a linear operator.

With L(theta) the mean loss of ``evaluator.LossEvaluator`` (plus
regularization), ``HessianOperator`` stands for H = d^2 L / d theta^2 and
applies it to a vector (a Hessian-vector product, HVP) without ever forming H:

* ``forward_over_reverse``: the gradient g(theta) is taken by reverse mode
  (``tf.GradientTape``) inside a forward-mode accumulator
  (``tf.autodiff.ForwardAccumulator``) seeded with the tangent v, so that
  H v = d/dt g(theta + t v) at t = 0 comes out as the JVP of the gradient.
* ``reverse_over_reverse``: H v = d/d theta <g(theta), v> with nested tapes.

Each batch's HVP is weighted by its number of examples in the same data pass
as the loss, so the batch size never changes the operator.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tf_sharpness.evaluator import (LossEvaluator, LossFn, _raise_non_finite,
                                    replica_mean_loss)

METHODS = ("forward_over_reverse", "reverse_over_reverse")

__all__ = ["HessianOperator", "METHODS", "replica_mean_loss"]


class HessianOperator(LossEvaluator):
  """Hessian of the mean loss over ``data`` w.r.t. ``model.trainable_variables``.

  Args:
    model, loss_fn, data, training, include_regularization, batch_size,
      strategy: as for ``LossEvaluator`` (the loss may be a batch mean,
      per-example values or a Keras loss with reduction "sum").
    method: ``"forward_over_reverse"`` or ``"reverse_over_reverse"``.
  """

  def __init__(self, model, loss_fn: LossFn, data, *,
               method: str = "forward_over_reverse", **kwargs):
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    self.method = method
    super().__init__(model, loss_fn, data, **kwargs)
    self.num_matvecs = 0
    self._hvp_pass = self._data_pass(self._batch_hvp, keep_gradient=False)
    self._full_pass = None

  def matvec(self, v: Sequence) -> list[tf.Tensor]:
    """Returns H v for a list of tensors shaped like the variables."""
    v = self._check_vector(v)
    loss, _, hv, finite = self._run(self._hvp_pass, v)
    self.num_matvecs += 1
    if not bool(finite):
      _raise_non_finite(loss, [], hv)
    return hv

  def loss_gradient_and_matvec(self, v: Sequence):
    """Returns (L, grad L, H v) from one pass over the data.

    (A separate graph: returning the gradient from the HVP graph keeps
    parts of the backward pass alive that ``matvec`` prunes, ~20% slower.)
    """
    v = self._check_vector(v)
    if self._full_pass is None:
      self._full_pass = self._data_pass(self._batch_hvp, keep_gradient=True)
    loss, grad, hv, finite = self._run(self._full_pass, v)
    self.num_matvecs += 1
    if not bool(finite):
      _raise_non_finite(loss, grad, hv)
    return loss, grad, hv

  def _batch_hvp(self, x, y, v):
    params = self._read_params()
    if self.method == "forward_over_reverse":
      with tf.autodiff.ForwardAccumulator(params, v) as acc:
        with tf.GradientTape() as tape:
          tape.watch(params)
          loss = self._objective(params, x, y)
        grad = tape.gradient(
            loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
      hv = acc.jvp(grad, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    else:
      with tf.GradientTape() as outer:
        outer.watch(params)
        with tf.GradientTape() as inner:
          inner.watch(params)
          loss = self._objective(params, x, y)
        grad = inner.gradient(
            loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        gv = tf.add_n([tf.reduce_sum(g * t) for g, t in zip(grad, v)])
      hv = outer.gradient(gv, params,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, grad, hv
