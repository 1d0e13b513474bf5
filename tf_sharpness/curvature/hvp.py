"""The Hessian of a Keras model's mean training loss as a linear operator.

With L(theta) the mean loss of ``evaluator.LossEvaluator`` (plus
regularization), ``HessianOperator`` stands for H = d^2 L / d theta^2 and
applies it to a vector (a Hessian-vector product, HVP) without ever forming H:

* ``forward_over_reverse``: the gradient g(theta) is taken by reverse mode
  (``tf.GradientTape``) inside a forward-mode accumulator
  (``tf.autodiff.ForwardAccumulator``) seeded with the tangent v, so that
  H v = d/dt g(theta + t v) at t = 0 comes out as the JVP of the gradient.
* ``reverse_over_reverse``: H v = d/d theta <g(theta), v> with nested tapes.
* ``finite_difference``: the central difference of gradients along the
  unit vector u = v / |v| with step h,

      H v ~ |v| (g(theta + h u) - g(theta - h u)) / (2 h),

  whose error is O(h^2) (Taylor) plus O(eps |g| / h) (rounding); h is
  eps^(1/3) max(1, max|theta|), eps the machine epsilon of the parameters.
  Its error is estimated once by Richardson's rule: D(2h) - D(h) ~ 3 c h^2,
  so |D(h) - Hv| ~ |D(2h) - D(h)| / 3.

Exact methods come first.  If the requested one cannot differentiate the
model (forward mode cannot enter the ``while`` loop of a Keras RNN; an op
may have no second derivative), the first product falls back to the other
exact method and then to finite differences, says so in one log line and
records the method used in ``hessian_definition()``.  A model that none of
them can differentiate is refused with ``UnsupportedModelError`` naming the
layer.

Self-check.  An exact method is only as right as TensorFlow's second-
derivative rules for every op of the model (``tf.nn.moments`` had a wrong
one; see ``exact_moments``; a custom layer may hide a ``stop_gradient`` in
its forward pass).  So the first product of an operator is checked against a
reference that uses first derivatives only: along one random unit vector r
(seeded), with D(h) = (g(theta + h r) - g(theta - h r)) / 2h at the step h of
``finite_difference`` and at 2h,

    R = (4 D(h) - D(2h)) / 3,   spread c = |D(h) - D(2h)| / |R|,
    fd_check_relative_error e = |H r - R| / |R|.

The spread c measures how far the reference itself can be trusted (R's
error is about c where rounding dominates, far less where truncation does).
With the limits (t, c_max) of the dtype products are computed in
(``self_check.LIMITS``: (1e-7, 1e-4) for float64, (1e-4, 1e-2) for float32,
(1e-2, 0.1) for a float16/bfloat16 compute dtype), the check is
*inconclusive* if c > c_max, and changes nothing; else it *agrees* if
e <= max(t, 10 c) and *disagrees* otherwise: then one log line names the
layer whose parameters' block of H r is furthest off, and the operator
switches to ``finite_difference``, whose products are right to their
estimated error.  Across a kink of a ReLU-family activation or of max
pooling the gradient jumps, the two steps disagree (D grows as 1/h) and a
difference of gradients is no reference there: the check is inconclusive,
so a ReLU network keeps its exact method.  The outcome is in
``hessian_definition()`` (``fd_check``, ``fd_check_relative_error``,
``fd_check_spread``).  It costs one product and six gradients, once per
operator; ``self_check=False`` skips it.

Each batch's HVP is weighted by its number of examples in the same data pass
as the loss, so the batch size never changes the operator.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Sequence

import numpy as np
import tensorflow as tf

from tf_sharpness.curvature import self_check
from tf_sharpness.errors import NonFiniteError, UnsupportedModelError
from tf_sharpness.curvature.evaluator import (LossEvaluator, LossFn, _raise_non_finite, dense,
                                    replica_mean_loss)

METHODS = ("forward_over_reverse", "reverse_over_reverse", "finite_difference")

__all__ = ["HessianOperator", "METHODS", "replica_mean_loss"]

log = logging.getLogger("tf_sharpness")


class HessianOperator(self_check.SelfChecked, LossEvaluator):
  """Hessian of the mean loss over ``data`` w.r.t. ``model.trainable_variables``.

  Args:
    model, loss_fn, data, training, include_regularization, batch_size,
      strategy: as for ``LossEvaluator`` (the loss may be a batch mean,
      per-example values, a Keras loss with reduction "sum" or the model's
      ``CompiledLoss``).
    method: ``"forward_over_reverse"``, ``"reverse_over_reverse"`` or
      ``"finite_difference"`` (see the module doc for the fallbacks).
    self_check: check the first exact product against a difference of
      gradients (see the module doc).
  """

  def __init__(self, model, loss_fn: LossFn, data, *,
               method: str = "forward_over_reverse", self_check: bool = True, **kwargs):
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    self.method = method
    self.requested_method = method
    self.self_check = bool(self_check)
    self.fd_relative_error: float | None = None
    super().__init__(model, loss_fn, data, **kwargs)
    self.num_matvecs = 0
    self._verified = False  # has a product succeeded (no more fallbacks)?
    self._failed_layer = None  # where a failed method broke, if known
    self._passes: dict = {}

  def matvec(self, v: Sequence) -> list[tf.Tensor]:
    """Returns H v for a list of tensors shaped like the variables."""
    loss, _, hv = self._product(v, keep_gradient=False)
    return hv

  def loss_gradient_and_matvec(self, v: Sequence):
    """Returns (L, grad L, H v) from one pass over the data.

    (A separate graph: returning the gradient from the HVP graph keeps
    parts of the backward pass alive that ``matvec`` prunes, ~20% slower.)
    """
    return self._product(v, keep_gradient=True)

  def hessian_definition(self) -> dict:
    out = super().hessian_definition()
    if self._own_products:
      out["hvp_method"] = self.method
      out.update(self.check_definition())
    if self.fd_relative_error is not None:
      out["hvp_fd_relative_error"] = self.fd_relative_error  # estimated at the first product
    return out

  # ---------------------------------------------------------------- internals

  def _pass(self, keep_gradient: bool, scale: float = 1.0, method: str | None = None):
    method = method or self.method
    key = (method, keep_gradient, scale)
    if key not in self._passes:
      if method == self.method and scale == 1.0:
        batch_fn = self._batch_hvp
      else:
        batch_fn = functools.partial(self._batch_hvp, scale=scale, method=method)
      self._passes[key] = self._data_pass(batch_fn, keep_gradient=keep_gradient)
    return self._passes[key]

  @property
  def _hvp_pass(self):
    """The traced HVP pass of the current method (for tests)."""
    return self._pass(False)

  @property
  def _own_products(self) -> bool:
    """Whether products are this class's (subclasses such as the GGN and
    the Fisher bring their own and take no method, fallback or FD)."""
    return type(self)._batch_hvp is HessianOperator._batch_hvp

  def _product(self, v, keep_gradient: bool):
    v = self._check_vector(v)
    while True:
      try:
        loss, grad, hv, finite = self._run(self._pass(keep_gradient), v)
      except Exception as exc:  # the first product decides the method
        if self._verified or not self._own_products or isinstance(exc, NonFiniteError):
          raise
        self._fall_back(exc)
        continue
      if (self._verified or not bool(finite) or not self._own_products
          or not self._needs_check() or not self._disagrees_with_differences()):
        break  # else the method changed: this product again, by the new one
    self.num_matvecs += 1
    if not bool(finite):
      _raise_non_finite(loss, grad, hv)
    if not self._verified:
      self._verified = True
      if (self.method == "finite_difference" and self._own_products
          and self._needs_fd_error()):
        self.fd_relative_error = self._fd_error(v, hv)
        self._remember()
    return loss, grad, hv

  def _fall_back(self, exc: Exception) -> None:
    """Switches to the next method after ``exc``, or refuses the model.

    Only a failure to differentiate twice falls back: if the plain gradient
    fails too, the error is the user's (a loss or shape bug) and is raised
    unchanged, unless the gradient is undefined ("No gradient defined"),
    which refuses the model naming the layer."""
    where = _where(self.model, exc)
    if where is not None:
      self._failed_layer = where
    try:
      self._run(self._grad_pass, [])
    except LookupError as grad_exc:
      raise UnsupportedModelError(_refusal(
          self.model, grad_exc, _where(self.model, grad_exc) or self._failed_layer,
          what="differentiable")) from grad_exc
    except Exception:
      raise exc from None
    order = [m for m in METHODS if m != self.requested_method] \
        if self.requested_method != "finite_difference" else []
    later = order[order.index(self.method) + 1:] if self.method in order else order
    if not later:
      raise UnsupportedModelError(_refusal(self.model, exc, self._failed_layer)) from exc
    log.warning("Hessian-vector products: %s failed (in %s); using %s",
                self.method, where or f"model {self.model.name!r}", later[0])
    self.method = later[0]

  def _disagrees_with_differences(self) -> bool:
    """The self-check of the module doc; True if it switched the method."""
    return self._run_self_check()

  def _check_products(self, r):
    """H r by the current method, D(h) and D(2h) (flat), and whether all
    were finite."""
    flat = lambda x: np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in x])
    runs = [self._run(self._pass(False), r),
            self._run(self._pass(False, 1.0, "finite_difference"), r),
            self._run(self._pass(False, 2.0, "finite_difference"), r)]
    return (*(flat(out[2]) for out in runs), all(bool(out[3]) for out in runs))

  def _fd_error(self, v, hv) -> float | None:
    """Richardson's estimate of the relative error of a finite-difference
    product (one more product, at step 2h); None if that product is not
    finite."""
    _, _, hv2, finite = self._run(self._pass(False, scale=2.0), v)
    self.num_matvecs += 1
    if not bool(finite):
      return None
    a, b = (np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in x])
            for x in (hv, hv2))
    if not a.any():
      return None  # H v = 0 (v = 0?): no relative error to tell
    err = float(np.linalg.norm(b - a) / 3 / np.linalg.norm(a))
    log.warning("Hessian-vector products by central finite differences: estimated "
                "relative error %.1e", err)
    return err

  def _batch_hvp(self, x, y, v, scale: float = 1.0, method: str | None = None):
    params = self._read_params()
    method = method or self.method
    if method == "finite_difference":
      return self._batch_fd_hvp(params, x, y, v, scale)
    if method == "forward_over_reverse":
      with tf.autodiff.ForwardAccumulator(params, v) as acc:
        with tf.GradientTape() as tape:
          tape.watch(params)
          loss = self._objective(params, x, y)
        grad = dense(tape.gradient(
            loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO))
      hv = acc.jvp(grad, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    else:
      with tf.GradientTape() as outer:
        outer.watch(params)
        with tf.GradientTape() as inner:
          inner.watch(params)
          loss = self._objective(params, x, y)
        grad = dense(inner.gradient(
            loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO))
        gv = tf.add_n([tf.reduce_sum(g * t) for g, t in zip(grad, v)])
      hv = outer.gradient(gv, params,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, grad, dense(hv)

  def _batch_fd_hvp(self, params, x, y, v, scale):
    eps = _compute_eps(self.model, self.dtype)
    largest = tf.reduce_max([tf.reduce_max(tf.abs(p)) for p in params])
    h = scale * eps ** (1 / 3) * tf.maximum(tf.cast(1.0, self.dtype), largest)
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(t * t) for t in v]))
    safe = tf.where(norm > 0, norm, tf.ones_like(norm))
    unit = [t / safe for t in v]

    _, plus, _ = self._batch_gradient_at(x, y, [p + h * u for p, u in zip(params, unit)])
    _, minus, _ = self._batch_gradient_at(x, y, [p - h * u for p, u in zip(params, unit)])
    loss, grad, _ = self._batch_gradient_at(x, y, params)
    hv = [(a - b) * (norm / (2 * h)) for a, b in zip(plus, minus)]
    return loss, grad, hv


_LOW_PRECISION_EPS = {"float16": float(np.finfo(np.float16).eps), "bfloat16": 2.0 ** -7}


def _compute_eps(model, dtype) -> float:
  """The machine epsilon the gradients are computed in: the compute dtype
  of a mixed-precision model (float16: h ~ 0.1 max(1, max|theta|)), else
  the parameters'."""
  compute = getattr(getattr(model, "dtype_policy", None), "compute_dtype", None)
  return max(float(np.finfo(dtype.as_numpy_dtype).eps), _LOW_PRECISION_EPS.get(compute, 0.0))


def _where(model, exc: Exception) -> str | None:
  """The layer an error came from, as far as its message tells."""
  text = str(exc)
  layers = list(model._flatten_layers(include_self=False))
  called = re.search(r"calling (\w+)\.call\(\)", text)
  if called:
    names = [l.name for l in layers if type(l).__name__ == called.group(1)]
    if names:
      return f"layer {names[0]!r} ({called.group(1)})"
  for layer in sorted(layers, key=lambda l: -len(l.name)):
    # TensorFlow uniquifies a name scope used twice in a graph: name_1/...
    if re.search(rf"(^|[/'\" ]){re.escape(layer.name)}(_\d+)?(/|['\" ]|$)", text):
      return f"layer {layer.name!r} ({type(layer).__name__})"
  return None


def _refusal(model, exc: Exception, where: str | None,
             what: str = "twice differentiable") -> str:
  lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
  detail = next((l for l in lines if not l.startswith("Exception encountered")),
                type(exc).__name__)
  detail = re.sub(r"\x1b\[[0-9;]*m", "", detail)[:200]
  return (f"cannot take Hessian-vector products of model {model.name!r}: "
          f"{where or 'an op'} is not {what} by any method "
          f"({type(exc).__name__}: {detail})")
