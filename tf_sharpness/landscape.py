"""Loss-landscape probes around the current parameters theta.

* ``loss_along``: L(theta + alpha * scale * d) for a list of alphas.
* ``sgd_step_scale``: Delta = mean over minibatches of lr * |g_b^T e|, the
  typical length of an SGD step along e (Jastrzebski et al. 2019, Fig. 2).
* ``eigenvector_slices``: ``loss_along`` each e_i with alpha * Delta_i.
* ``control_slice``: the same alphas along a random unit direction r, at
  the distances of a reference slice (alpha * Delta_e1 along r): curvature
  along e_i against curvature in a random direction at equal distance.
* ``surface``: L(theta + x d1 + y d2) on a grid; ``filter_normalized_direction``
  gives the random directions of Li et al. (2018).
* ``step_analysis``: for eta' = factor * eta, the relative loss change
  100 (L(theta - eta' (g^T e) e) / L(theta) - 1) % of a minibatch step
  restricted to e (a top eigenvector, a random unit vector, or the full step
  theta - eta' g), averaged over minibatches.
* ``component_scaling``: the SGD step with its component along e scaled
  by alpha (removed, kept only, doubled), and where the minimum along e lies
  relative to the step: does the step overshoot along e?
* ``walk``: L(theta_t + a (theta_{t+1} - theta_t)) between consecutive
  iterates (Xing et al. 2018), the position and height of its minimum and
  whether the curve is convex.

Every probe evaluates the loss at perturbed parameter *values*
(``LossEvaluator.loss_at``, i.e. ``model.stateless_call``): the model's
variables are never written, so they are bit-identical afterwards, also
when a probe raises.  The probes take a ``LossEvaluator`` (which holds the
model, the loss and the evaluation data; a ``HessianOperator`` is one);
``loss_along`` also takes a model, a loss and data directly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from tf_sharpness.curvature import vectors
from tf_sharpness.errors import NonFiniteError
from tf_sharpness.curvature.evaluator import LossEvaluator

DEFAULT_ALPHAS = (-16, -8, -4, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 2, 4, 8, 16)
DEFAULT_FACTORS = (0.25, 0.33, 0.5, 1, 2, 3, 4)


_flat = vectors.to_numpy
_parts = vectors.split_numpy


def current_parameters(operator: LossEvaluator) -> np.ndarray:
  return operator.parameters()


def _losses_at(operator, theta, direction, coefficients) -> np.ndarray:
  """L(theta + c * direction) for each c; inf/NaN where the loss overflows
  (far along a direction), which the summaries show as gaps."""
  return np.array([operator.loss_at(_parts(theta + c * direction, operator.shapes),
                                    allow_nonfinite=True)
                   for c in coefficients])


def loss_along(model_or_operator, loss_fn=None, data=None, direction=None,
               alphas: Sequence[float] = DEFAULT_ALPHAS, *, scale: float = 1.0,
               batch_size: int = 512) -> np.ndarray:
  """L(theta + alpha * scale * direction) for each alpha.

  Call as ``loss_along(model, loss_fn, data, direction, alphas)`` or
  ``loss_along(operator, direction=..., alphas=...)``; ``direction`` is a
  variable-shaped list (not normalized here).
  """
  if hasattr(model_or_operator, "loss_at"):  # an evaluator, of any backend
    op = model_or_operator
  else:
    if loss_fn is None or data is None:
      raise ValueError("loss_along(model, loss_fn, data, direction, alphas): "
                       "loss_fn and data are required with a model")
    op = LossEvaluator(model_or_operator, loss_fn, data, batch_size=batch_size)
  if direction is None:
    raise ValueError("direction is required")
  d = _flat(direction)
  if d.shape[0] != op.dim:
    raise ValueError(f"direction has {d.shape[0]} entries, the model has {op.dim}")
  if not np.all(np.isfinite(d)):
    raise NonFiniteError("direction", "NaN or inf entries; the slice would be "
                         "meaningless")
  return _losses_at(op, current_parameters(op), d,
                    [a * scale for a in alphas])


def random_direction(operator: LossEvaluator, seed: int = 0) -> list[np.ndarray]:
  """A Gaussian direction of unit norm (over all variables)."""
  d = np.random.default_rng(seed).standard_normal(operator.dim)
  return _parts(d / np.linalg.norm(d), operator.shapes)


def filter_normalized_direction(operator: LossEvaluator, seed: int = 0
                                ) -> list[np.ndarray]:
  """Li et al. (2018): a Gaussian direction whose every filter (a slice along
  the last axis of a kernel of any rank: an output channel of a conv kernel
  or a unit of a dense kernel) has the Euclidean norm of the same filter of
  the weights; 1-D variables (biases, BatchNorm) get zero."""
  rng = np.random.default_rng(seed)
  out = []
  for v in operator.variables:
    w = v.numpy().astype(np.float64)
    if w.ndim <= 1:
      out.append(np.zeros_like(w))
      continue
    d = rng.standard_normal(w.shape)
    out.append(d * _filter_norms(w) / (_filter_norms(d) + 1e-12))
  return out


def _filter_norms(a: np.ndarray) -> np.ndarray:
  """The norm of every slice a[..., j], broadcastable against ``a``."""
  axes = tuple(range(a.ndim - 1))
  return np.sqrt(np.sum(a * a, axis=axes, keepdims=True))


def sgd_step_scale(minibatch_operator: LossEvaluator, minibatches, direction,
                   learning_rate: float, *, gradients=None) -> float:
  """Delta = mean_b lr * |g_b^T e| over minibatches (x_b, y_b).

  ``gradients`` (from ``minibatch_gradients``) spares the gradient passes
  when several probes share the minibatches.
  """
  if gradients is None:
    gradients = minibatch_gradients(minibatch_operator, minibatches)
  e = _flat(direction)
  return float(learning_rate * np.mean([abs(g @ e) for _, g in gradients]))


def minibatch_gradients(minibatch_operator: LossEvaluator, minibatches
                        ) -> list[tuple[float, np.ndarray]]:
  """(loss, flat gradient) of each minibatch, one pass each; the probes
  below take this list so that several of them share the passes."""
  out = []
  for batch in minibatches:
    minibatch_operator.set_data(batch)
    loss, grad = minibatch_operator.loss_and_gradient()
    out.append((float(loss), _flat(grad)))
  return out


@dataclasses.dataclass
class Slice:
  """L(theta + alpha * scale * d) at ``alphas`` along the unit direction
  ``name``: the point alpha lies at Euclidean distance |alpha| * scale."""
  name: str
  alphas: np.ndarray
  losses: np.ndarray
  scale: float


def eigenvector_slices(operator: LossEvaluator,
                       minibatch_operator: LossEvaluator, minibatches,
                       directions: dict, learning_rate: float,
                       alphas: Sequence[float] = DEFAULT_ALPHAS, *,
                       gradients=None) -> list[Slice]:
  """Slices L(theta + alpha Delta_e e) along named unit directions ``e``.

  ``operator`` holds the evaluation data (the paper: the first 1,280
  training examples); Delta_e comes from ``sgd_step_scale`` on the
  minibatches.  Gradients are taken once per minibatch for all directions
  (or passed in as ``gradients`` from ``minibatch_gradients``).
  """
  if gradients is None:
    gradients = minibatch_gradients(minibatch_operator, minibatches)
  theta = current_parameters(operator)
  out = []
  for name, direction in directions.items():
    delta = sgd_step_scale(minibatch_operator, minibatches, direction,
                           learning_rate, gradients=gradients)
    scale = delta if delta > 0 else 1.0
    losses = _losses_at(operator, theta, _flat(direction),
                        [a * scale for a in alphas])
    out.append(Slice(name, np.asarray(alphas, float), losses, scale))
  return out


def control_slice(operator: LossEvaluator, reference: Slice, *, seed: int = 0,
                  name: str = "random") -> Slice:
  """The loss along a random unit direction at the alphas and the step scale
  of ``reference`` (e.g. the e1 slice): the same Euclidean distances, so the
  two curves compare curvature along e_i with curvature in a random
  direction, as Jastrzebski et al. (2019) do."""
  direction = _flat(random_direction(operator, seed=seed))
  losses = _losses_at(operator, current_parameters(operator), direction,
                      [a * reference.scale for a in reference.alphas])
  return Slice(name, np.asarray(reference.alphas, float), losses, reference.scale)


def surface(operator: LossEvaluator, d1, d2, xs: Sequence[float],
            ys: Sequence[float]) -> np.ndarray:
  """losses[i, j] = L(theta + xs[j] d1 + ys[i] d2) (inf/NaN where it overflows)."""
  theta = current_parameters(operator)
  a, b = _flat(d1), _flat(d2)
  return np.array([[operator.loss_at(_parts(theta + x * a + y * b, operator.shapes),
                                     allow_nonfinite=True)
                    for x in xs] for y in ys])


def step_analysis(minibatch_operator: LossEvaluator, minibatches,
                  directions: dict, learning_rate: float,
                  factors: Sequence[float] = DEFAULT_FACTORS, *,
                  gradients=None) -> np.ndarray:
  """Relative loss change (%) of partial SGD steps, shape (len(directions), len(factors)).

  ``directions`` maps names to unit vectors (variable-shaped lists), or to
  ``None`` for the full step theta - eta' g.  The loss before and after is
  measured on the minibatch that gave the gradient; changes are averaged
  over minibatches (``gradients``: optional ``minibatch_gradients`` output).
  """
  names = list(directions)
  theta = current_parameters(minibatch_operator)
  if gradients is None:
    gradients = minibatch_gradients(minibatch_operator, minibatches)
  out = np.zeros((len(names), len(factors)))
  for batch, (loss0, g) in zip(minibatches, gradients):
    minibatch_operator.set_data(batch)
    for i, name in enumerate(names):
      if directions[name] is None:
        step = g
      else:
        e = _flat(directions[name])
        step = (g @ e) * e
      losses = _losses_at(minibatch_operator, theta, -step,
                          [f * learning_rate for f in factors])
      out[i] += 100.0 * (losses / loss0 - 1.0)
  return out / len(minibatches)


@dataclasses.dataclass
class Walk:
  """The loss between two iterates: ``alphas`` in [start, end] with 0 at
  theta_t and 1 at theta_{t+1}."""
  alphas: np.ndarray
  losses: np.ndarray
  argmin: float
  min_loss: float
  convex: bool
  interior_minimum: bool


def walk(operator: LossEvaluator, theta_t: np.ndarray, theta_next: np.ndarray,
         num_points: int = 10, extend: float = 0.0) -> Walk:
  """L(theta_t + a (theta_next - theta_t)) for ``num_points`` values of a
  in [-extend, 1 + extend].

  The minimum is refined by the parabola through the lowest sample and its
  neighbours (NaN if the curve is not finite everywhere, e.g. a diverging
  step); ``convex`` is whether all second differences are >= 0 (up to
  float noise); ``interior_minimum`` whether the lowest point lies strictly
  between the two iterates (a "valley floor" crossed by the step).
  """
  if num_points < 3:
    raise ValueError(f"num_points must be >= 3, got {num_points}")
  alphas = np.linspace(-extend, 1.0 + extend, num_points)
  delta = np.asarray(theta_next, np.float64) - np.asarray(theta_t, np.float64)
  losses = _losses_at(operator, np.asarray(theta_t, np.float64), delta, alphas)
  if not np.all(np.isfinite(losses)):  # a diverging step: no minimum to refine
    return Walk(alphas, losses, float("nan"), float("nan"), False, False)
  argmin, low, interior = _refined_minimum(alphas, losses)
  second = np.diff(losses, 2)
  tol = 1e-6 * max(1.0, float(np.max(np.abs(losses))))
  return Walk(alphas, losses, argmin, low, bool(np.all(second >= -tol)),
              bool(0.0 < argmin < 1.0 and interior))


def _refined_minimum(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, bool]:
  """(argmin, min, interior): the lowest sample, refined by the parabola
  through it and its neighbours when it is not at an end of the grid."""
  i = int(np.argmin(ys))
  argmin, low = float(xs[i]), float(ys[i])
  interior = 0 < i < len(xs) - 1
  if interior:
    c2, c1, c0 = np.polyfit(xs[i - 1:i + 2], ys[i - 1:i + 2], 2)
    if c2 > 0:
      argmin = float(-c1 / (2 * c2))
      low = float(c0 + c1 * argmin + c2 * argmin**2)
  return argmin, low, interior


DEFAULT_COMPONENT_ALPHAS = (0.0, 0.5, 1.0, 2.0)


@dataclasses.dataclass
class ComponentScaling:
  """The minibatch SGD step with its component along a unit direction e
  scaled by alpha (Jastrzebski et al. 2019: is the step too large
  along the sharpest direction?).  With g_b a minibatch gradient and
  s_b = eta (g_b^T e):

  * ``full_step[j]``: 100 (L_b(theta - eta g_b + (1 - alpha_j) s_b e) / L_b(theta) - 1),
    the step with its e-component scaled by alpha_j (alpha = 0: e removed;
    alpha = 1: the SGD step), in %, mean over minibatches;
  * ``component_only[j]``: the same for the step alpha_j s_b e alone (e kept only);
  * ``line_minimum``: per minibatch, t* = argmin_t L_b(theta - t s_b e) on
    the grid ``line`` (refined by a parabola; an end of the grid when the
    minimum lies outside it).  The SGD step moves to t = 1 along e, so it
    *overshoots* the minimum along e when t* < 1 (on a quadratic with
    curvature lambda along e, t* = 1 / (eta lambda)), and it *increases*
    the loss along e when L_b(theta - s_b e) > L_b(theta) (t* < 1/2 on a
    quadratic, eta lambda > 2);
  * ``overshoot_fraction``, ``increase_fraction``: the fractions of
    minibatches (overshooting: of those with a minimum along e; NaN, stored
    as null, where the step has no e component or the line is not finite).
  """
  alphas: np.ndarray
  full_step: np.ndarray
  component_only: np.ndarray
  line: np.ndarray
  line_minimum: np.ndarray
  overshoot_fraction: float
  increase_fraction: float

  def to_json(self) -> dict:
    """Lists of floats, NaN as None (strict JSON)."""
    nan_to_none = lambda x: None if isinstance(x, float) and math.isnan(x) else x
    return {k: ([nan_to_none(x) for x in v.tolist()] if isinstance(v, np.ndarray)
                else nan_to_none(v))
            for k, v in dataclasses.asdict(self).items()}


def component_scaling(minibatch_operator: LossEvaluator, minibatches, direction,
                      learning_rate: float,
                      alphas: Sequence[float] = DEFAULT_COMPONENT_ALPHAS, *,
                      line: Sequence[float] = tuple(np.linspace(0.0, 2.0, 17)),
                      gradients=None) -> ComponentScaling:
  """``ComponentScaling`` of the SGD step along the unit vector ``direction``
  (variable-shaped list), on the minibatches that give the gradients
  (``gradients``: optional ``minibatch_gradients`` output)."""
  alphas = np.asarray(alphas, np.float64)
  line = np.asarray(line, np.float64)
  if line.size < 3 or np.any(np.diff(line) <= 0) or line[0] != 0.0:
    raise ValueError(f"line must be increasing from 0 with >= 3 points, got {line}")
  e = _flat(direction)
  theta = current_parameters(minibatch_operator)
  if gradients is None:
    gradients = minibatch_gradients(minibatch_operator, minibatches)
  full = np.zeros(len(alphas))
  only = np.zeros(len(alphas))
  minima, increases = [], []
  for batch, (loss0, g) in zip(minibatches, gradients):
    minibatch_operator.set_data(batch)
    s = learning_rate * float(g @ e)
    rest = learning_rate * g - s * e
    full += 100.0 * (_losses_at(minibatch_operator, theta - rest, e, -alphas * s) / loss0
                     - 1.0)
    only += 100.0 * (_losses_at(minibatch_operator, theta, e, -alphas * s) / loss0 - 1.0)
    along = _losses_at(minibatch_operator, theta, e, -line * s)
    flat = np.ptp(along) <= 1e-12 * max(1.0, abs(loss0))  # s = 0: no minimum along e
    minima.append(_refined_minimum(line, along)[0]
                  if np.all(np.isfinite(along)) and not flat else float("nan"))
    at_step = (along[np.flatnonzero(line == 1.0)[0]] if 1.0 in line else
               _losses_at(minibatch_operator, theta, e, [-s])[0])
    increases.append(bool(at_step > loss0))
  minima = np.asarray(minima)
  found = minima[np.isfinite(minima)]
  n = len(minibatches)
  return ComponentScaling(alphas, full / n, only / n, line, minima,
                          float(np.mean(found < 1.0)) if found.size else float("nan"),
                          float(np.mean(increases)))
