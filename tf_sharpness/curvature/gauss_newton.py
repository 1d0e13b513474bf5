"""The generalized Gauss-Newton (GGN) matrix as a curvature operator.

For outputs z = f(x; theta) and a loss l(y, z) convex in z,

    G = (1/N) sum_n J_n^T H_n J_n,   J_n = dz_n/dtheta,   H_n = d^2 l/dz_n^2,

the Hessian without the term that involves the loss's gradient times the
network's second derivatives.  G is positive semi-definite.  A product
G v takes one forward pass with a tangent (u = J v, forward mode), the
output-space Hessian applied to u (forward over reverse on the loss alone),
and one backward pass (J^T (H u), reverse mode).
"""

from __future__ import annotations

import tensorflow as tf

from tf_sharpness.curvature.compiled_loss import CompiledLoss
from tf_sharpness.curvature.evaluator import replica_mean_loss
from tf_sharpness.curvature.hvp import HessianOperator


class GaussNewtonOperator(HessianOperator):
  """GGN of the mean loss over ``data``; the arguments of ``HessianOperator``.

  Regularization losses are not part of the GGN (``include_regularization``
  is forced to False) and ``method`` is ignored.
  """

  def __init__(self, model, loss_fn, data, **kwargs):
    if isinstance(loss_fn, CompiledLoss):
      raise ValueError("loss_fn: the GGN needs a loss of the outputs (loss_fn(y, y_pred)), "
                       f"not {loss_fn.name}; pass the output loss")
    kwargs["include_regularization"] = False
    super().__init__(model, loss_fn, data, **kwargs)

  def _batch_hvp(self, x, y, v):
    params = self._read_params()
    with tf.GradientTape() as tape:
      tape.watch(params)
      with tf.autodiff.ForwardAccumulator(params, v) as acc:
        z, _ = self._outputs(params, x)
      jv = acc.jvp(z, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    # z may be a nested structure (a multi-output model): every step below
    # takes it output by output.
    z0 = tf.nest.map_structure(tf.stop_gradient, z)
    with tf.autodiff.ForwardAccumulator(z0, tf.nest.map_structure(tf.stop_gradient, jv)
                                        ) as out_acc:
      with tf.GradientTape() as out_tape:
        out_tape.watch(tf.nest.flatten(z0))
        loss = tf.cast(replica_mean_loss(self.loss_fn, y, z0), self.dtype)
      gz = out_tape.gradient(loss, z0, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    hjv = out_acc.jvp(gz, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    gv = tape.gradient(tf.nest.flatten(z), params,
                       output_gradients=[tf.stop_gradient(t) for t in tf.nest.flatten(hjv)],
                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, [], [tf.cast(g, self.dtype) for g in gv]
