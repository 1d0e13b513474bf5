"""The Hessian of a Keras model's mean loss on the JAX and PyTorch backends.

Keras 3 runs one model on TensorFlow, JAX or PyTorch.  ``HessianOperator``
(and ``LossEvaluator``) built under ``KERAS_BACKEND=jax`` or ``torch`` are
this class: the same operator, the same public methods and records, computed
by that backend's own autodiff.  The loss is a pure function of the weights,

    L(theta) = (1/N) sum_b n_b l_b(theta),
    l_b(theta) = mean_n loss(y_n, f(x_n; theta))  [+ R(theta)],

where f is ``model.stateless_call(theta, non_trainable, x, training=...)``
with its state updates discarded (BatchNorm statistics are never written)
and R the regularization losses of that call.  Then

* JAX: grad L by ``jax.value_and_grad``; H v = d/dt grad L(theta + t v) by
  ``jax.jvp`` of it (forward-over-reverse), or the gradient of <grad L, v>
  (reverse-over-reverse); each compiled once with ``jax.jit``.
* PyTorch: grad L by ``torch.autograd.grad``; H v by double backward
  (reverse-over-reverse: the gradient of <grad L, v>).  Forward mode is not
  used: Keras layers call ops (``torch.nn.functional`` kernels with custom
  backward) that ``torch.func`` cannot always push tangents through.
* finite differences (any backend): |v| (g(theta + h u) - g(theta - h u))/2h,
  u = v/|v|, as in ``hvp``; the first product falls back to the next method
  where one has no second derivative (PyTorch's ``hardsigmoid``), in one log
  line, and a model whose gradient fails is refused naming the layer.

A loss is reduced as on TensorFlow (``evaluator``'s module doc).  The first
product is
checked against differences of gradients exactly as on TensorFlow
(``self_check``).  float64 on JAX needs ``jax_enable_x64`` (the environment
variable ``JAX_ENABLE_X64=1`` or ``jax.config.update("jax_enable_x64", True)``
before the model is built): a model whose variables JAX truncated to float32
is refused in one line.  Neither JAX's nor PyTorch's ``moments`` stops a
gradient, so normalization layers need no replacement here.

Keras promotes float64 to float32 on these backends (``result_type`` maps
every 64-bit type to its 32-bit one "to align with JAX's default"), so a
float64 model's matmuls and some activations run in float32 there.  The
passes here run with that mapping off (``float64_promotion``), so a float64
model is measured in float64 on every backend (the same weights give the
same numbers); what ``model.fit`` trains is untouched.

Attention is computed unfused during the passes (``unfused_attention``:
softmax(Q K^T scale + mask) V by einsums): PyTorch's fused CPU kernel has no
second derivative, and JAX's loses float64 precision.  The records say so
(``attention``).

Not on these backends (refused in one line where asked for): ``tf.distribute``
strategies, the preconditioned and per-layer block operators.  The
Gauss-Newton and Fisher operators are in ``backend_output_operators``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_sharpness.curvature import self_check
from tf_sharpness.curvature.compiled_loss import CompiledLoss
from tf_sharpness.errors import NonFiniteError, UnsupportedModelError

log = logging.getLogger("tf_sharpness")

METHODS = ("forward_over_reverse", "reverse_over_reverse", "finite_difference")
_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


def backend() -> str:
  return keras.backend.backend()


class BackendHessianOperator(self_check.SelfChecked):
  """``HessianOperator`` (and ``LossEvaluator``) on the JAX or PyTorch backend.

  Takes the arguments of ``HessianOperator``; see the module doc.
  """

  def __init__(self, model, loss_fn, data, *, training: bool = False,
               include_regularization: bool = True, batch_size: int = 512,
               strategy=None, method: str = "forward_over_reverse",
               self_check: bool = True):
    self.backend = backend()
    if self.backend not in ("jax", "torch"):
      raise ValueError(f"BackendHessianOperator is for the jax and torch backends, "
                       f"not {self.backend!r}")
    if strategy is not None and getattr(strategy, "num_replicas_in_sync", 1) > 1:
      raise ValueError("strategy: tf.distribute strategies need KERAS_BACKEND=tensorflow")
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    from tf_sharpness.curvature.evaluator import check_arguments
    check_arguments(model, loss_fn, batch_size, include_regularization, training)
    self.model = model
    self.loss_fn = loss_fn
    self.training = bool(training)
    self.include_regularization = bool(include_regularization)
    self.variables = list(model.trainable_variables)
    self.shapes = [tuple(int(d) for d in v.shape) for v in self.variables]
    _check_dtypes(self.variables)
    self.dtype = tf.as_dtype(keras.backend.standardize_dtype(self.variables[0].dtype))
    self.dim = int(sum(np.prod(s) for s in self.shapes))
    self.batch_size = int(batch_size)
    self.requested_method = method
    self.method = ("reverse_over_reverse" if self.backend == "torch"
                   and method == "forward_over_reverse" else method)
    self.self_check = bool(self_check)
    self.fd_relative_error: float | None = None
    self.num_matvecs = 0
    self._verified = False
    self._autodiff = _JaxAutodiff(self._objective) if self.backend == "jax" \
        else _TorchAutodiff(self._objective)
    self.set_data(data)

  # ------------------------------------------------------------------ public

  def set_data(self, data) -> None:
    """Replaces the data (batches are converted to backend tensors once)."""
    batches = _batches(data, self.batch_size)
    if isinstance(self.loss_fn, CompiledLoss) and batches:
      self.loss_fn.build(*batches[0])
    self.num_examples = sum(_num_examples(x) for x, _ in batches)
    if self.num_examples == 0:
      raise ValueError("data holds no examples")
    convert = lambda t: keras.ops.convert_to_tensor(t) if t is not None else None
    self._batches = [(keras.tree.map_structure(convert, x),
                      keras.tree.map_structure(convert, y), _num_examples(x))
                     for x, y in batches]

  def loss(self) -> float:
    return float(self.loss_and_gradient()[0])

  def gradient(self):
    return self.loss_and_gradient()[1]

  def loss_and_gradient(self):
    return self.loss_and_gradient_at(self._params())

  def loss_at(self, params: Sequence, *, allow_nonfinite: bool = False) -> float:
    params = self._backend_params(params)
    nt = self._non_trainable()
    total = sum(n * float(_np(self._autodiff.loss(params, nt, x, y)))
                for x, y, n in self._batches) / self.num_examples
    if not np.isfinite(total) and not allow_nonfinite:
      _raise_non_finite(total, [])
    return float(total)

  def loss_and_gradient_at(self, params: Sequence):
    params = self._backend_params(params)
    nt = self._non_trainable()
    loss, grad = 0.0, [np.zeros(s) for s in self.shapes]
    for x, y, n in self._batches:
      l, g = self._autodiff.value_and_grad(params, nt, x, y)
      loss += n * float(_np(l))
      grad = [a + n * _np(b) for a, b in zip(grad, g)]
    loss /= self.num_examples
    grad = [(g / self.num_examples).astype(self.dtype.as_numpy_dtype) for g in grad]
    if not (np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grad)):
      _raise_non_finite(loss, grad)
    return loss, grad

  def matvec(self, v: Sequence):
    return self._product(v)[2]

  def loss_gradient_and_matvec(self, v: Sequence):
    return self._product(v)

  def parameters(self) -> np.ndarray:
    return np.concatenate([np.ravel(_np(v.value)).astype(np.float64) for v in self.variables])

  def hessian_definition(self) -> dict:
    out = {"examples": self.num_examples,
           "batchnorm_mode": "batch statistics" if self.training else "moving statistics",
           "dropout": "on" if self.training else "off",
           "regularization": self.include_regularization,
           "loss_reduction": "mean over examples",
           "parameters": self.dim,
           "backend": self.backend,
           "hvp_method": self.method}
    if isinstance(self.loss_fn, CompiledLoss):
      out["objective"] = self.loss_fn.name
    if any(isinstance(layer, keras.layers.MultiHeadAttention)
           for layer in self.model._flatten_layers(include_self=False)):
      out["attention"] = "unfused (softmax(Q K^T) V), no flash kernel"
    out.update(self.check_definition())
    if self.fd_relative_error is not None:
      out["hvp_fd_relative_error"] = self.fd_relative_error
    return out

  # ---------------------------------------------------------------- internals

  def _objective(self, params, non_trainable, x, y):
    with float64_promotion(), unfused_attention():
      return self._loss_value(params, non_trainable, x, y)

  def _loss_value(self, params, non_trainable, x, y):
    if isinstance(self.loss_fn, CompiledLoss):
      return keras.ops.cast(self.loss_fn.total(params, non_trainable, x, y, self.training),
                            self.dtype.name)
    y_pred, _, losses = self.model.stateless_call(
        params, non_trainable, x, training=self.training, return_losses=True)
    loss = mean_loss(self.loss_fn, y, y_pred, self.dtype.name)
    if self.include_regularization and losses:
      loss = loss + keras.ops.cast(sum(losses), self.dtype.name)
    return loss

  def _params(self):
    return [v.value for v in self.variables]

  def _non_trainable(self):
    return [v.value for v in self.model.non_trainable_variables]

  def _backend_params(self, params):
    if len(params) != len(self.shapes):
      raise ValueError(f"vector has {len(params)} parts, the model has "
                       f"{len(self.shapes)} trainable variables")
    out = []
    for i, (t, s) in enumerate(zip(params, self.shapes)):
      t = np.asarray(t, dtype=self.dtype.as_numpy_dtype) if not _is_backend(t) else t
      if tuple(t.shape) != s:
        raise ValueError(f"vector part {i} has shape {tuple(t.shape)}, "
                         f"variable has shape {s}")
      out.append(keras.ops.convert_to_tensor(t, dtype=self.dtype.name))
    return out

  def _product(self, v):
    """(L, grad L, H v) by the current method, with the first product's
    self-check (which may switch the method and compute it again)."""
    v = self._backend_params([_np(t) for t in v])
    while True:
      try:
        loss, grad, hv = self._compute(v, self.method)
        break
      except Exception as exc:  # the first product decides the method
        if self._verified or isinstance(exc, NonFiniteError):
          raise
        self._fall_back(exc)
    self.num_matvecs += 1
    if not (np.isfinite(loss) and all(np.all(np.isfinite(t)) for t in [*grad, *hv])):
      _raise_non_finite(loss, grad)
    if not self._verified:
      self._verified = True
      if self._needs_check() and self._disagrees():
        loss, grad, hv = self._compute(v, self.method)
      if self.method == "finite_difference" and self._needs_fd_error():
        self.fd_relative_error = self._fd_error(v, hv)
        self._remember()
    return loss, grad, hv

  def _fall_back(self, exc: Exception) -> None:
    """The next method after ``exc`` (an op without a second derivative, as
    in ``hvp``), or the refusal naming the layer if even the gradient fails."""
    from tf_sharpness.curvature.hvp import _refusal, _where
    try:
      self.loss_and_gradient_at(self._params())
    except Exception as grad_exc:
      if not _no_derivative(grad_exc):
        raise  # the user's error (shapes, a diverged loss), unchanged
      raise UnsupportedModelError(_refusal(self.model, grad_exc, _where(self.model, grad_exc),
                                           what="differentiable")) from grad_exc
    if not _no_derivative(exc):
      raise exc
    order = [m for m in METHODS if m != self.requested_method] \
        if self.requested_method != "finite_difference" else []
    if self.backend == "torch":
      order = [m for m in order if m != "forward_over_reverse"]
    later = order[order.index(self.method) + 1:] if self.method in order else order
    if not later:
      raise UnsupportedModelError(_refusal(self.model, exc, _where(self.model, exc))) from exc
    detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    log.warning("Hessian-vector products: %s failed (%s); using %s", self.method, detail,
                later[0])
    self.method = later[0]

  def _compute(self, v, method: str, scale: float = 1.0):
    params, nt = self._params(), self._non_trainable()
    if method == "finite_difference":
      return self._fd_product(params, v, scale)
    loss, grad, hv = 0.0, [np.zeros(s) for s in self.shapes], \
        [np.zeros(s) for s in self.shapes]
    for x, y, n in self._batches:
      l, g, h = self._autodiff.hvp(params, nt, x, y, v, method)
      loss += n * float(_np(l))
      grad = [a + n * _np(b) for a, b in zip(grad, g)]
      hv = [a + n * _np(b) for a, b in zip(hv, h)]
    cast = lambda t: (t / self.num_examples).astype(self.dtype.as_numpy_dtype)
    return loss / self.num_examples, [cast(g) for g in grad], [cast(h) for h in hv]

  def _fd_product(self, params, v, scale):
    p = [_np(t).astype(np.float64) for t in params]
    u = [_np(t).astype(np.float64) for t in v]
    norm = np.sqrt(sum(float(np.sum(t * t)) for t in u))
    if norm == 0:
      loss, grad = self.loss_and_gradient_at(params)
      return loss, grad, [np.zeros(s, self.dtype.as_numpy_dtype) for s in self.shapes]
    u = [t / norm for t in u]
    eps = _compute_eps(self.model, self.dtype)
    largest = max(float(np.max(np.abs(t))) for t in p)
    h = scale * eps ** (1 / 3) * max(1.0, largest)
    _, plus = self.loss_and_gradient_at([a + h * b for a, b in zip(p, u)])
    _, minus = self.loss_and_gradient_at([a - h * b for a, b in zip(p, u)])
    loss, grad = self.loss_and_gradient_at(params)
    hv = [((a.astype(np.float64) - b) * (norm / (2 * h))).astype(self.dtype.as_numpy_dtype)
          for a, b in zip(plus, minus)]
    return loss, grad, hv

  def _disagrees(self) -> bool:
    """The self-check of ``hvp``'s module doc; True if it switched the method."""
    return self._run_self_check()

  def _check_products(self, r):
    """H r by the current method, D(h) and D(2h) (flat), and whether all
    were finite."""
    flat = lambda x: np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in x])
    r = self._backend_params(r)
    runs = [self._compute(r, self.method), self._compute(r, "finite_difference"),
            self._compute(r, "finite_difference", 2.0)]
    exact, d1, d2 = (flat(out[2]) for out in runs)
    return exact, d1, d2, all(np.all(np.isfinite(t)) for t in (exact, d1, d2))

  def _fd_error(self, v, hv) -> float | None:
    _, _, hv2 = self._compute(v, "finite_difference", 2.0)
    self.num_matvecs += 1
    a = np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in hv])
    b = np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in hv2])
    if not a.any() or not np.all(np.isfinite(b)):
      return None
    err = float(np.linalg.norm(b - a) / 3 / np.linalg.norm(a))
    log.warning("Hessian-vector products by central finite differences: estimated "
                "relative error %.1e", err)
    return err


def on_backend(cls, *args, **kwargs):
  """What ``cls(*args, **kwargs)`` is on the JAX or PyTorch backend: this
  operator for ``LossEvaluator`` and ``HessianOperator``, those of
  ``backend_output_operators`` for the Gauss-Newton and Fisher operators;
  the other operators are refused in one line."""
  from tf_sharpness.curvature import backend_output_operators as outputs
  from tf_sharpness.curvature.evaluator import LossEvaluator
  from tf_sharpness.curvature.fisher import FisherOperator
  from tf_sharpness.curvature.gauss_newton import GaussNewtonOperator
  from tf_sharpness.curvature.hvp import HessianOperator
  on_this_backend = {HessianOperator: BackendHessianOperator,
                     LossEvaluator: BackendHessianOperator,
                     GaussNewtonOperator: outputs.BackendGaussNewtonOperator,
                     FisherOperator: outputs.BackendFisherOperator}
  if cls not in on_this_backend:
    raise NotImplementedError(
        f"{cls.__name__} needs KERAS_BACKEND=tensorflow (on {backend()!r}: "
        f"{', '.join(c.__name__ for c in on_this_backend)} and what is built on them)")
  if cls is LossEvaluator:
    kwargs.pop("method", None)
  return on_this_backend[cls](*args, **kwargs)


# ------------------------------------------------------------------ autodiff


class _JaxAutodiff:
  """Loss, gradient and HVP of ``objective(params, nt, x, y)`` by JAX, jitted."""

  def __init__(self, objective):
    import jax
    self.jax = jax
    grad = jax.value_and_grad(objective)
    self.loss = jax.jit(objective)
    self.value_and_grad = jax.jit(grad)

    def forward_over_reverse(params, nt, x, y, v):
      (loss, g), (_, hv) = jax.jvp(lambda p: grad(p, nt, x, y), (params,), (v,))
      return loss, g, hv

    def reverse_over_reverse(params, nt, x, y, v):
      def dot(p):
        loss, g = grad(p, nt, x, y)
        return sum(jax.numpy.vdot(a, b) for a, b in zip(g, v)), (loss, g)
      hv, (loss, g) = jax.grad(dot, has_aux=True)(params)
      return loss, g, hv

    self._hvp = {"forward_over_reverse": jax.jit(forward_over_reverse),
                 "reverse_over_reverse": jax.jit(reverse_over_reverse)}

  def hvp(self, params, nt, x, y, v, method):
    return self._hvp[method](params, nt, x, y, v)


class _TorchAutodiff:
  """Loss, gradient and HVP of ``objective`` by torch.autograd."""

  def __init__(self, objective):
    import torch
    self.torch = torch
    self.objective = objective

  def _leaves(self, params):
    return [p.detach().clone().requires_grad_(True) for p in params]

  def loss(self, params, nt, x, y):
    with self.torch.no_grad():
      return self.objective([p.detach() for p in params], nt, x, y)

  def value_and_grad(self, params, nt, x, y):
    torch = self.torch
    leaves = self._leaves(params)
    with torch.enable_grad():
      loss = self.objective(leaves, nt, x, y)
      grad = torch.autograd.grad(loss, leaves, allow_unused=True)
    return loss.detach(), [_zeros_if_none(g, p) for g, p in zip(grad, leaves)]

  def hvp(self, params, nt, x, y, v, method):
    del method  # reverse-over-reverse (see the module doc)
    torch = self.torch
    leaves = self._leaves(params)
    with torch.enable_grad():
      loss = self.objective(leaves, nt, x, y)
      grad = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
      pairs = [(g, t) for g, t in zip(grad, v) if g is not None]
      if not pairs:
        zeros = [torch.zeros_like(p) for p in leaves]
        return loss.detach(), zeros, zeros
      dot = sum((g * t).sum() for g, t in pairs)
      hv = torch.autograd.grad(dot, leaves, allow_unused=True)
    return (loss.detach(), [_zeros_if_none(g, p).detach() for g, p in zip(grad, leaves)],
            [_zeros_if_none(h, p) for h, p in zip(hv, leaves)])


_NO_DERIVATIVE = re.compile(
    r"derivative for .* is not implemented|[Dd]ifferentiation rule for .* not implemented"
    r"|does not support (forward|reverse)|not (twice )?differentiable|No gradient defined"
    r"|jvp.* not implemented|NotImplementedError")


def _no_derivative(exc: Exception) -> bool:
  """Whether ``exc`` says an op has no (higher) derivative on this backend."""
  return isinstance(exc, NotImplementedError) or bool(
      _NO_DERIVATIVE.search(f"{type(exc).__name__}: {exc}"))


def _zeros_if_none(g, like):
  return like.new_zeros(like.shape) if g is None else g


# ------------------------------------------------------------------ helpers


_promotion_lock = threading.RLock()
_promotion_depth = 0
_demoted = {}


@contextlib.contextmanager
def float64_promotion():
  """While active, Keras' type promotion keeps 64-bit types (see the module
  doc); nested and concurrent uses are counted."""
  global _promotion_depth
  from keras.src.backend.common import dtypes
  table = dtypes.BIT64_TO_BIT32_DTYPE
  with _promotion_lock:
    if _promotion_depth == 0:
      _demoted.clear()
      _demoted.update(table)
      for key in list(table):
        table[key] = key
    _promotion_depth += 1
  try:
    yield
  finally:
    with _promotion_lock:
      _promotion_depth -= 1
      if _promotion_depth == 0:
        table.update(_demoted)


_attention_lock = threading.RLock()
_attention_depth = 0
_fused = None


@contextlib.contextmanager
def unfused_attention():
  """While active, ``keras.ops.dot_product_attention`` (what
  ``MultiHeadAttention`` calls) is ``dot_product_attention`` below."""
  global _attention_depth, _fused
  from keras.src import ops as src_ops
  with _attention_lock:
    if _attention_depth == 0:
      _fused = src_ops.dot_product_attention
      src_ops.dot_product_attention = dot_product_attention
    _attention_depth += 1
  try:
    yield
  finally:
    with _attention_lock:
      _attention_depth -= 1
      if _attention_depth == 0:
        src_ops.dot_product_attention = _fused


def dot_product_attention(query, key, value, bias=None, mask=None, scale=None,
                          is_causal=False, flash_attention=None,
                          attn_logits_soft_cap=None):
  """``keras.ops.dot_product_attention`` by plain ops (shapes
  [batch, length, heads, head_dim]): softmax(q k^T scale + bias, masked) v."""
  del flash_attention
  ops = keras.ops
  if scale is None:
    scale = 1.0 / np.sqrt(query.shape[-1])
  logits = ops.einsum("btnh,bsnh->bnts", query, key) * ops.cast(scale, query.dtype)
  if bias is not None:
    logits = logits + ops.cast(bias, logits.dtype)
  if attn_logits_soft_cap is not None:
    logits = attn_logits_soft_cap * ops.tanh(logits / attn_logits_soft_cap)
  keep = None
  if mask is not None:
    keep = ops.cast(mask, "bool")
  if is_causal:
    t, s_len = logits.shape[-2], logits.shape[-1]
    causal = ops.cast(ops.tril(ops.ones((t, s_len))), "bool")
    keep = causal if keep is None else ops.logical_and(keep, causal)
  if keep is not None:
    logits = ops.where(keep, logits, ops.cast(-1e9 if logits.dtype != "float16" else -3e4,
                                              logits.dtype))
  probs = ops.softmax(logits, axis=-1)
  return ops.einsum("bnts,bsnh->btnh", probs, value)


def mean_loss(loss_fn, y_true, y_pred, dtype: str):
  """The batch mean of ``loss_fn`` in ``dtype``, whatever its form, as
  ``evaluator.replica_mean_loss`` takes it (Keras' own reduction and masks;
  per-example values averaged; a "sum" reduction divided by the batch)."""
  value = keras.ops.cast(keras.ops.convert_to_tensor(loss_fn(y_true, y_pred)), dtype)
  if len(value.shape) > 0:
    return keras.ops.mean(value)
  if isinstance(loss_fn, keras.losses.Loss) and loss_fn.reduction == "sum":
    n = keras.tree.flatten(y_pred)[0].shape[0]
    return value / keras.ops.cast(n, dtype)
  return value


def _check_dtypes(variables):
  for v in variables:
    declared = keras.backend.standardize_dtype(v.dtype)
    actual = keras.backend.standardize_dtype(v.value.dtype)
    if declared != actual:
      raise ValueError(
          f"variable {v.path!r} is declared {declared} but holds {actual}: on JAX, "
          "float64 needs jax_enable_x64 (set JAX_ENABLE_X64=1, or "
          "jax.config.update('jax_enable_x64', True), before building the model)")


def _compute_eps(model, dtype) -> float:
  from tf_sharpness.curvature.hvp import _compute_eps as tf_eps
  return tf_eps(model, dtype)


def _np(t) -> np.ndarray:
  if hasattr(t, "detach"):  # torch
    return t.detach().cpu().numpy()
  return np.asarray(t)


def _is_backend(t) -> bool:
  return type(t).__module__.split(".")[0] in ("jax", "jaxlib", "torch")


def _num_examples(x) -> int:
  return int(np.shape(keras.tree.flatten(x)[0])[0])


def _batches(data, batch_size: int) -> list:
  """``data`` as a list of (x, y) numpy batches (lists of inputs or labels as
  tuples, as ``model.fit`` takes them)."""
  from tf_sharpness.curvature.evaluator import _as_dataset, _check_batch
  batches = []
  for batch in _as_dataset(data, batch_size):
    x, y = _check_batch(batch)
    batches.append(keras.tree.map_structure(
        lambda t: t.numpy() if hasattr(t, "numpy") and not _is_backend(t) else np.asarray(t),
        (x, y)))
  return batches


def _raise_non_finite(loss, grad):
  if not np.isfinite(loss):
    raise NonFiniteError("loss", f"{float(loss)}; the loss may have diverged or "
                         "the inputs hold NaN")
  if not all(np.all(np.isfinite(g)) for g in grad):
    raise NonFiniteError("gradient", "NaN or inf found")
  raise NonFiniteError("Hessian-vector product", "NaN or inf found; the loss may have "
                       "diverged or the inputs hold NaN")
