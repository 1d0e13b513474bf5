"""The Gauss-Newton and empirical Fisher operators on the JAX and PyTorch
backends: ``GaussNewtonOperator`` and ``FisherOperator`` built under
``KERAS_BACKEND=jax`` or ``torch`` are these classes (same arguments, same
public methods as on TensorFlow; ``backend_operator`` for the rest).

With outputs z = f(x; theta) (``model.stateless_call``, state discarded),

* GGN:    G v = (1/N) sum_b n_b J_b^T H_b (J_b v),  H_b = d^2 l_b / dz^2 of
  the batch-mean output loss l_b(z), J_b = dz/dtheta on batch b;
* Fisher: F v = (1/N) sum_n g_n (g_n^T v), g_n the gradient of example n's
  loss, as J_l^T (J_l v) / n_b per batch with J_l the Jacobian of the vector
  of per-example losses (no per-example gradient is stored).

J v is a forward-mode product on JAX (``jax.jvp``).  On PyTorch it is the
derivative in u of <J^T u, v> (two reverse passes, since ``torch.func``
cannot push tangents through every Keras layer): J^T u is linear in u, so
that derivative is exact.  H_b (J v) is the same on the output-space loss
alone, and J^T w one reverse pass.  Regularization is not part of either
operator, and neither has a finite-difference self-check (that check is of
the Hessian); ``method`` is ignored, as on TensorFlow.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_sharpness.curvature import backend_operator as B
from tf_sharpness.curvature.compiled_loss import CompiledLoss


class _OutputOperator(B.BackendHessianOperator):
  """What the GGN and the Fisher share: outputs as a function of the
  weights, one product per batch, no Hessian self-check."""

  def __init__(self, model, loss_fn, data, **kwargs):
    if isinstance(loss_fn, CompiledLoss):
      raise ValueError(f"loss_fn: {type(self).__name__} needs a loss of the outputs "
                       f"(loss_fn(y, y_pred)), not {loss_fn.name}; pass the output loss")
    kwargs["include_regularization"] = False
    kwargs["self_check"] = False
    kwargs.pop("method", None)
    super().__init__(model, loss_fn, data, **kwargs)
    self.method = "exact"
    self._products = (_JaxProducts if self.backend == "jax" else _TorchProducts)(self)

  def outputs(self, params, nt, x):
    """z = f(x; params), computed as the HVP passes compute it."""
    with B.float64_promotion(), B.unfused_attention():
      return self.model.stateless_call(params, nt, x, training=self.training)[0]

  def output_loss(self, y, z):
    """What the product differentiates twice (GGN) or per example (Fisher)."""
    raise NotImplementedError

  def _fall_back(self, exc: Exception) -> None:
    raise exc  # one exact product, no other method to try

  def _compute(self, v, method: str, scale: float = 1.0):
    del method, scale
    params, nt = self._params(), self._non_trainable()
    loss, out = 0.0, [np.zeros(s) for s in self.shapes]
    for x, y, n in self._batches:
      l, h = self._products.product(params, nt, x, y, v)
      loss += n * float(B._np(l))
      out = [a + n * B._np(b) for a, b in zip(out, h)]
    cast = lambda t: (t / self.num_examples).astype(self.dtype.as_numpy_dtype)
    return loss / self.num_examples, [], [cast(h) for h in out]

  def hessian_definition(self) -> dict:
    out = super().hessian_definition()
    for key in ("hvp_method", "fd_check", "fd_check_relative_error", "fd_check_spread"):
      out.pop(key, None)
    out["curvature"] = self.CURVATURE
    out["regularization"] = False
    return out


class BackendGaussNewtonOperator(_OutputOperator):
  """``GaussNewtonOperator`` on JAX or PyTorch (see the module doc)."""

  CURVATURE = "generalized Gauss-Newton"

  def output_loss(self, y, z):
    with B.float64_promotion():
      return B.mean_loss(self.loss_fn, y, z, self.dtype.name)


class BackendFisherOperator(_OutputOperator):
  """``FisherOperator`` on JAX or PyTorch; ``per_example_loss_fn(y, z)``
  must give one loss per example (a Keras loss with ``reduction=None``)."""

  CURVATURE = "empirical Fisher"

  def __init__(self, model, per_example_loss_fn, data, **kwargs):
    self.per_example_loss_fn = per_example_loss_fn
    super().__init__(model, per_example_loss_fn, data, **kwargs)

  def output_loss(self, y, z):
    with B.float64_promotion():
      losses = keras.ops.cast(self.per_example_loss_fn(y, z), self.dtype.name)
    if len(losses.shape) != 1:
      raise ValueError("FisherOperator needs per-example losses of shape [batch], got "
                       f"shape {tuple(losses.shape)}; build the Keras loss with "
                       "reduction=None")
    return losses


class _JaxProducts:
  """G v or F v of one batch by JAX (forward mode for J v), jitted."""

  def __init__(self, op):
    import jax
    jnp = jax.numpy
    fisher = isinstance(op, BackendFisherOperator)

    def product(params, nt, x, y, v):
      f = lambda p: op.outputs(p, nt, x)
      if fisher:
        per = lambda p: op.output_loss(y, f(p))
        losses, dots = jax.jvp(per, (params,), (v,))
        _, pullback = jax.vjp(per, params)
        return jnp.mean(losses), pullback(dots / losses.shape[0])[0]
      z, jv = jax.jvp(f, (params,), (v,))
      loss_of_z = lambda z: op.output_loss(y, z)
      loss = loss_of_z(z)
      _, hjv = jax.jvp(jax.grad(loss_of_z), (z,), (jv,))
      _, pullback = jax.vjp(f, params)
      return loss, pullback(hjv)[0]

    self.product = jax.jit(product)


class _TorchProducts:
  """G v or F v of one batch by torch.autograd (J v by two reverse passes)."""

  def __init__(self, op):
    import torch
    self.torch = torch
    self.op = op
    self.fisher = isinstance(op, BackendFisherOperator)

  def _jvp(self, outs, leaves, v):
    """J v for outs = f(leaves): d/du <J^T u, v> at u = 0."""
    torch = self.torch
    if not any(o.requires_grad for o in outs):  # no output depends on the weights
      return [torch.zeros_like(o) for o in outs]
    us = [torch.zeros_like(o, requires_grad=True) for o in outs]
    live = [(o, u) for o, u in zip(outs, us) if o.requires_grad]
    jtu = torch.autograd.grad([o for o, _ in live], leaves, grad_outputs=[u for _, u in live],
                              create_graph=True, allow_unused=True)
    dot = sum((g * t).sum() for g, t in zip(jtu, v) if g is not None)
    if not torch.is_tensor(dot) or not dot.requires_grad:
      return [torch.zeros_like(o) for o in outs]
    jv = torch.autograd.grad(dot, us, allow_unused=True)
    return [B._zeros_if_none(j, o) for j, o in zip(jv, outs)]

  def product(self, params, nt, x, y, v):
    torch, op = self.torch, self.op
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    with torch.enable_grad():
      z = op.outputs(leaves, nt, x)
      if self.fisher:
        losses = op.output_loss(y, z)
        (dots,) = self._jvp([losses], leaves, v)
        weights = (dots / losses.shape[0]).detach()
        out = (torch.autograd.grad(losses, leaves, grad_outputs=weights, allow_unused=True)
               if losses.requires_grad else [None] * len(leaves))
        loss = losses.mean()
      else:
        flat = keras.tree.flatten(z)
        jv = [t.detach() for t in self._jvp(flat, leaves, v)]
        z0 = [t.detach().requires_grad_(True) for t in flat]
        loss = op.output_loss(y, keras.tree.pack_sequence_as(z, z0))
        gz = torch.autograd.grad(loss, z0, create_graph=True, allow_unused=True)
        pairs = [(g, t) for g, t in zip(gz, jv) if g is not None and g.requires_grad]
        if pairs:
          hz = torch.autograd.grad(sum((g * t).sum() for g, t in pairs), z0,
                                   allow_unused=True)
          hz = [B._zeros_if_none(h, t).detach() for h, t in zip(hz, z0)]
        else:  # the loss is linear in z: no curvature
          hz = [torch.zeros_like(t) for t in z0]
        live = [(t, h) for t, h in zip(flat, hz) if t.requires_grad]
        out = (torch.autograd.grad([t for t, _ in live], leaves,
                                   grad_outputs=[h for _, h in live], allow_unused=True)
               if live else [None] * len(leaves))
    return loss.detach(), [B._zeros_if_none(g, p).detach() for g, p in zip(out, leaves)]
