"""Curvature along the optimizer's own direction: cheap enough for every step.

With L the mean loss, g = grad L and H = grad^2 L at the parameters theta:

* directional curvature along a direction d (the gradient, the update
  theta_{t+1} - theta_t, Adam's preconditioned gradient, ...):

      c(d) = d^T H d / ||d||^2,

  one HVP; with ``blocks`` also each block's d_b^T H_bb d_b / ||d_b||^2 (one
  HVP per block: "normalized directional sharpness" by layer);
* batch sharpness (Andreyev & Beneventano): over minibatches B with their
  own gradient g_B and Hessian H_B,

      E_B [ g_B^T H_B g_B / ||g_B||^2 ],

  a mean over the given batches with its standard error (one gradient and
  one HVP per batch);
* critical sharpness (Kalra et al. 2026): the smallest step eta_c > 0 along
  the update -d (d per unit learning rate, e.g. the gradient for SGD) at
  which the loss rises, L(theta - eta d) > L(theta), found by doubling from
  ``initial_step`` and bisecting, forward passes only; lambda_c = 2 / eta_c.
  On a quadratic with A = H, L(theta - eta d) - L(theta) = -eta d^T g +
  eta^2 d^T A d / 2, so eta_c = 2 d^T g / d^T A d and lambda_c = d^T A d /
  d^T g (= c(g) along the gradient);
* the gradient of the sharpness along u (Damian, Nichani & Lee 2023):

      grad_theta (u^T H(theta) u) = D^3 L [u, u, .] = d/dt H(theta + t u) u,

  at fixed u (with the top eigenvector u = e1 and ||u|| = 1 this is
  grad lambda_1), by one JVP of an HVP (forward-over-forward-over-reverse
  on TensorFlow), and its cosine with the loss gradient g.  At the edge of
  stability the iterate oscillates along u: with theta = theta* + x u,
  g = g* + x lambda_1 u + (x^2 / 2) grad lambda_1 + O(x^3), and the middle
  term flips sign every step; the cosine with g_perp = g - (u^T g) u (the
  loss gradient without its component along u) is free of it and keeps
  the self-stabilization term (x^2 / 2) grad lambda_1.

Each takes ``(model, loss, data)`` in the forms ``HessianOperator`` takes,
or ``evaluator=`` an operator already built, and never writes the model's
variables.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from tf_sharpness.curvature import vectors
from tf_sharpness.curvature.hvp import HessianOperator

__all__ = ["DirectionalResult", "directional_curvature", "batch_sharpness",
           "CriticalResult", "critical_sharpness", "SharpnessGradient",
           "sharpness_gradient"]


# What a probe along training can measure with these (``DirectionalProbe``);
# the first three are cheap enough for every step.
QUANTITIES = ("gradient", "update", "critical_update", "batch", "self_stabilization")


@dataclasses.dataclass
class DirectionalResult:
  """``value`` (with ``stderr`` for a mean over batches), per-block values,
  and the cost in data passes."""
  value: float
  stderr: float | None = None
  blocks: dict = dataclasses.field(default_factory=dict)
  samples: list = dataclasses.field(default_factory=list)
  num_matvecs: int = 0
  num_gradients: int = 0


def _operator(model, loss, data, evaluator) -> HessianOperator:
  if evaluator is not None:
    return evaluator
  if model is None or loss is None or data is None:
    raise ValueError("pass model, loss and data, or evaluator=")
  return HessianOperator(model, loss, data)


def _flat(parts) -> np.ndarray:
  return vectors.to_numpy(parts)


def _direction(op, direction) -> np.ndarray:
  d = _flat(direction) if isinstance(direction, (list, tuple)) else np.asarray(
      direction, np.float64).ravel()
  if d.size != op.dim:
    raise ValueError(f"direction has {d.size} entries, the model has {op.dim} parameters")
  if not np.all(np.isfinite(d)) or not d.any():
    raise ValueError("direction must be finite and nonzero")
  return d


def _hvp(op, d: np.ndarray) -> np.ndarray:
  return _flat(op.matvec(vectors.split_numpy(d.astype(op.dtype.as_numpy_dtype), op.shapes)))


def directional_curvature(model=None, loss=None, data=None, *, direction,
                          blocks: Sequence | None = None,
                          evaluator=None) -> DirectionalResult:
  """d^T H d / ||d||^2 (see the module doc).

  Args:
    direction: a flat vector or a variable-shaped list.
    blocks: optional ``tf_sharpness.blocks.variable_blocks(model, "layer")``
      (or any list of blocks with ``name`` and ``indices`` into the
      variables): adds each block's own curvature.
  """
  op = _operator(model, loss, data, evaluator)
  d = _direction(op, direction)
  result = DirectionalResult(value=float(d @ _hvp(op, d) / (d @ d)), num_matvecs=1)
  if blocks:
    sizes = [int(np.prod(s)) for s in op.shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for block in blocks:
      mask = np.zeros(op.dim, bool)
      for i in block.indices:
        mask[offsets[i]:offsets[i + 1]] = True
      db = np.where(mask, d, 0.0)
      norm2 = float(db @ db)
      result.blocks[block.name] = float(db @ _hvp(op, db) / norm2) if norm2 else None
      result.num_matvecs += 1
  return result


def batch_sharpness(model=None, loss=None, batches=None, *,
                    evaluator=None) -> DirectionalResult:
  """The mean over ``batches`` (a list of (x, y) minibatches) of
  g_B^T H_B g_B / ||g_B||^2, with its standard error."""
  batches = list(batches or [])
  if len(batches) < 1:
    raise ValueError("batches: pass at least one (x, y) minibatch")
  op = None
  if evaluator is not None:
    # a private operator kept on the evaluator (its own data stays), so that
    # a call every step reuses its traced passes
    model, loss = evaluator.model, evaluator.loss_fn
    kwargs = {"training": evaluator.training}
    op = getattr(evaluator, "_batch_sharpness_operator", None)
  else:
    kwargs = {}
  values = []
  for batch in batches:
    if op is None:
      if model is None or loss is None:
        raise ValueError("pass model and loss, or evaluator=")
      op = HessianOperator(model, loss, batch, **kwargs)
      if evaluator is not None:
        evaluator._batch_sharpness_operator = op
    else:
      op.set_data(batch)
    _, grad = op.loss_and_gradient()
    g = _flat(grad)
    norm2 = float(g @ g)
    values.append(float(g @ _hvp(op, g) / norm2) if norm2 else 0.0)
  values = np.array(values)
  return DirectionalResult(
      value=float(values.mean()),
      stderr=float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None,
      samples=values.tolist(), num_matvecs=len(values), num_gradients=len(values))


@dataclasses.dataclass
class CriticalResult:
  """lambda_c = 2 / eta_c; ``eta_c`` None (lambda_c inf) when the loss rises
  at every step tried (d is not a descent direction), ``lambda_c`` 0 when it
  never rises up to the largest step tried."""
  lambda_c: float
  eta_c: float | None
  bracket: tuple
  num_losses: int


def critical_sharpness(model=None, loss=None, data=None, *, direction,
                       initial_step: float = 1e-3, rtol: float = 1e-3,
                       max_doublings: int = 60, evaluator=None,
                       origin: np.ndarray | None = None) -> CriticalResult:
  """The smallest eta > 0 with L(theta - eta d) > L(theta), theta the
  model's parameters or ``origin`` (a flat vector: the losses are taken
  there without writing the model's variables), by doubling
  from ``initial_step`` (halving, at most 30 times, if the loss already
  rises there: still rising at initial_step / 2^30 means d is no descent
  direction) and bisection to relative width ``rtol``; forward passes only.
  A direction with slope g^T d <= 0 (g the gradient on the operator's
  data) is no descent direction: lambda_c is infinite, decided from the
  gradient and not from losses (in float32 a step too small to move the
  weights gives L(theta) again, which would read as a descent)."""
  for name, value in (("initial_step", initial_step), ("rtol", rtol)):
    if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
      raise ValueError(f"{name} must be a positive number, got {value!r}")
  op = _operator(model, loss, data, evaluator)
  d = _direction(op, direction)
  theta = op.parameters() if origin is None else np.asarray(origin, np.float64).ravel()
  if theta.size != op.dim:
    raise ValueError(f"origin has {theta.size} entries, the model has {op.dim} parameters")
  base = op.loss_at(vectors.split_numpy(theta, op.shapes))  # the graph rises() uses
  count = 1
  # Whether -d is a descent direction at all, from the exact slope g^T d: the
  # losses cannot tell (in float32 a step too small to move the weights gives
  # L(theta) again, which would pass for a descent).
  gradient = op.gradient() if origin is None else op.loss_and_gradient_at(
      vectors.split_numpy(theta, op.shapes))[1]
  if not float(_flat(gradient) @ d) > 0:
    return CriticalResult(np.inf, None, (0.0, 0.0), count)

  def rises(eta):
    nonlocal count
    count += 1
    value = op.loss_at(vectors.split_numpy(theta - eta * d, op.shapes), allow_nonfinite=True)
    return not np.isfinite(value) or value > base

  lo, hi = 0.0, float(initial_step)
  if rises(hi):
    for _ in range(30):  # halve until it does not rise, down to initial_step / 2^30
      if not rises(hi / 2):
        lo = hi / 2
        break
      hi /= 2
    else:
      return CriticalResult(np.inf, None, (0.0, hi), count)
  else:
    lo = hi
    for _ in range(max_doublings):
      hi = 2 * lo
      if rises(hi):
        break
      lo = hi
    else:
      return CriticalResult(0.0, None, (lo, np.inf), count)
  while hi - lo > rtol * hi:
    mid = 0.5 * (lo + hi)
    if rises(mid):
      hi = mid
    else:
      lo = mid
  eta_c = 0.5 * (lo + hi)
  return CriticalResult(2.0 / eta_c, eta_c, (lo, hi), count)


@dataclasses.dataclass
class SharpnessGradient:
  """grad_theta (u^T H u) (a variable-shaped list) and, in flat vectors
  with u normalized: its norm, its cosine and inner product with the loss
  gradient g (a GD step -eta g changes u^T H u by -eta g^T grad(u^T H u)
  to first order), u^T g, ||g|| and the cosine with g_perp = g - (u^T g) u
  (see the module doc; 0 where g_perp or the gradient vanishes)."""
  gradient: list
  norm: float
  cosine_with_loss_gradient: float
  value: float  # u^T H u
  inner_with_loss_gradient: float = 0.0
  u_dot_loss_gradient: float = 0.0
  loss_gradient_norm: float = 0.0
  cosine_without_u: float = 0.0


def sharpness_gradient(model=None, loss=None, data=None, *, u, evaluator=None
                       ) -> SharpnessGradient:
  """grad_theta (u^T H(theta) u) at fixed u (see the module doc): the
  reverse-mode gradient of one HVP per batch, exact (TensorFlow)."""
  import tensorflow as tf
  op = _operator(model, loss, data, evaluator)
  if not isinstance(op, HessianOperator):
    raise NotImplementedError("sharpness_gradient needs KERAS_BACKEND=tensorflow")
  flat_u = _direction(op, u)
  parts = vectors.from_numpy(flat_u, op.shapes, op.dtype)

  def batch_fn(x, y, v):
    # The gradient (reverse mode) of u^T H u, H u by forward-over-reverse:
    # reverse-over-forward-over-reverse.  (Forward-over-forward-over-reverse
    # fails inside TensorFlow on convolutions.)
    params = op._read_params()
    with tf.GradientTape() as outer:
      outer.watch(params)
      with tf.autodiff.ForwardAccumulator(params, v) as inner:
        with tf.GradientTape() as tape:
          tape.watch(params)
          loss_value = op._objective(params, x, y)
        grad = [tf.convert_to_tensor(g) for g in tape.gradient(
            loss_value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)]
      hv = inner.jvp(grad, unconnected_gradients=tf.UnconnectedGradients.ZERO)
      quadratic = tf.add_n([tf.reduce_sum(h * u) for h, u in zip(hv, v)])
    third = outer.gradient(quadratic, params,
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss_value, grad, [*hv, *third]

  if not hasattr(op, "_sharpness_gradient_pass"):
    op._sharpness_gradient_pass = op._data_pass(batch_fn)
  _, grad, out, finite = op._run(op._sharpness_gradient_pass, parts)
  if not bool(finite):
    raise ValueError("sharpness_gradient: a non-finite value (the loss may have diverged)")
  n = len(op.shapes)
  hv, third = _flat(out[:n]), [np.asarray(t) for t in out[n:]]
  g, t = _flat(grad), _flat(third)
  unit = flat_u / np.linalg.norm(flat_u)
  g_perp = g - (unit @ g) * unit
  cosine = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) if (
      np.linalg.norm(a) * np.linalg.norm(b)) else 0.0
  return SharpnessGradient(gradient=third, norm=float(np.linalg.norm(t)),
                           cosine_with_loss_gradient=cosine(g, t),
                           value=float(flat_u @ hv), inner_with_loss_gradient=float(g @ t),
                           u_dot_loss_gradient=float(unit @ g),
                           loss_gradient_norm=float(np.linalg.norm(g)),
                           cosine_without_u=cosine(g_perp, t))
