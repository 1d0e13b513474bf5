"""Stability thresholds of first-order optimizers on a quadratic.

On L(theta) = 0.5 lambda theta^2, an optimizer with learning rate eta is
stable iff lambda is below its threshold; Cohen et al. (2021, 2022) found
that along real training trajectories the sharpness rises to that threshold
and hovers there ("edge of stability").  With a = eta * lambda:

* gradient descent, theta' = theta - a theta: |1 - a| < 1, so
  lambda < 2 / eta;
* heavy-ball momentum beta, v' = beta v - eta g, theta' = theta + v': the
  characteristic polynomial z^2 - (1 + beta - a) z + beta has a root at -1
  when a = 2 (1 + beta), so lambda < 2 (1 + beta) / eta;
* Nesterov momentum (Keras: theta' = theta + beta v' - eta g): the roots of
  z^2 - (1 - a)(1 + beta) z + (1 - a) beta reach -1 at
  a = (2 + 2 beta) / (1 + 2 beta);
* NSGD (``nsgd.NSGD``): the step along the top-K directions is gamma eta
  and along the rest complement * eta, so the two thresholds are those of
  the base rule at gamma eta and at complement * eta;
* Adam with beta_1 (Cohen et al. 2022, "adaptive edge of stability"): the
  preconditioned sharpness lambda_max(P^-1 H) (``PreconditionedOperator``)
  is stable below (2 + 2 beta_1) / ((1 - beta_1) eta).

``thresholds(optimizer)`` gives the lines to draw against the Hessian
spectrum, ``preconditioned_thresholds(optimizer)`` those against the
preconditioned spectrum (Adam).
"""

from __future__ import annotations

import dataclasses

import keras


@dataclasses.dataclass(frozen=True)
class Threshold:
  label: str
  value: float


def heavy_ball(learning_rate: float, momentum: float = 0.0,
               nesterov: bool = False) -> float:
  """The largest stable curvature of (heavy-ball or Nesterov) momentum SGD."""
  if nesterov:
    return (2 + 2 * momentum) / ((1 + 2 * momentum) * learning_rate)
  return 2 * (1 + momentum) / learning_rate


def adam(learning_rate: float, beta_1: float) -> float:
  """(2 + 2 beta_1) / ((1 - beta_1) eta), against lambda_max(P^-1 H)."""
  return (2 + 2 * beta_1) / ((1 - beta_1) * learning_rate)


def _base_label(momentum: float, nesterov: bool, eta: str) -> str:
  if nesterov:
    return f"(2+2β)/((1+2β){eta})"
  return f"2(1+β)/{eta}" if momentum else f"2/{eta}"


def thresholds(optimizer, learning_rate: float | None = None) -> list[Threshold]:
  """Stability thresholds for the Hessian spectrum under ``optimizer`` (a Keras
  SGD, ``NSGD`` or other) at its current learning rate; [] for optimizers
  whose threshold is on the preconditioned spectrum (Adam, RMSprop)."""
  optimizer = _unwrapped(optimizer)
  lr = current_learning_rate(optimizer) if learning_rate is None else learning_rate
  if not lr > 0:
    return []  # no step, no threshold
  momentum = float(getattr(optimizer, "momentum", 0.0) or 0.0)
  nesterov = bool(getattr(optimizer, "nesterov", False))
  if hasattr(optimizer, "gamma") and hasattr(optimizer, "complement"):
    out = []
    for factor, name in ((optimizer.gamma, "γη"), (optimizer.complement, "cη")):
      if factor > 0:
        out.append(Threshold(_base_label(momentum, nesterov, f"({name})"),
                             heavy_ball(factor * lr, momentum, nesterov)))
    return out
  if isinstance(optimizer, keras.optimizers.SGD):
    return [Threshold(_base_label(momentum, nesterov, "η"),
                      heavy_ball(lr, momentum, nesterov))]
  return []


def preconditioned_thresholds(optimizer, learning_rate: float | None = None
                              ) -> list[Threshold]:
  """The adaptive edge of stability of Adam (none for RMSprop: beta_1 = 0)."""
  lr = current_learning_rate(optimizer) if learning_rate is None else learning_rate
  if not lr > 0:
    return []
  beta_1 = float(getattr(_unwrapped(optimizer), "beta_1", 0.0))
  return [Threshold("(2+2β₁)/((1−β₁)η)", adam(lr, beta_1))]


def _unwrapped(optimizer):
  """The optimizer inside a ``LossScaleOptimizer`` (mixed precision)."""
  return getattr(optimizer, "inner_optimizer", optimizer)


def current_learning_rate(optimizer) -> float:
  """The learning rate at ``optimizer.iterations`` (schedules evaluated)."""
  return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
