"""Sharpness measures beyond lambda_max, as the generalization literature
defines them.

With L the mean loss over data at the parameters w and a scaling T (the
identity, or diag|w| for *adaptive* measures, Kwon et al. 2021,
Andriushchenko et al. 2023):

* worst-case sharpness (Foret et al. 2021; Andriushchenko et al. 2023)

      S_max(rho) = max_{||u||_p <= rho} L(w + T u) - L(w),   p = 2 or inf,

  by projected gradient ascent on u.  The first step from u = 0 is SAM's
  first-order solution (u = rho T g / ||T g||_2, or rho sign(T g)); later
  steps: for p = 2 the normalized step u <- P(u + rho T g / ||T g||) (a
  power iteration on a quadratic), for p = inf u <- clip(u + a_s sign(T g))
  with a_s = 2 rho / (s + 2).  The largest value met is returned: a *lower
  bound* on the maximum.  On a quadratic at a minimum the p = 2 ascent is a
  power iteration on I + c T H T, whose error falls linearly, by a factor q
  per step (q near 1 when the top two eigenvalues are close).  After each
  step, with d_s the change of the value and q = d_s / d_{s-1}, the value
  still to come is estimated as d_s q / (1 - q) (``remaining``), and
  ``tol=`` stops a restart once that is at most tol |value|; ``converged``
  says whether every restart got there (with ``tol=None``, the default,
  all ``steps`` are taken and ``converged`` is judged at 1e-3).  ``m``: m-sharpness, the mean of S_max over
  disjoint subsets of m examples (each with its own ascent).
* average-case sharpness

      S_avg(sigma) = E_{d ~ N(0, sigma^2 T^2)} L(w + d) - L(w),

  a Monte-Carlo mean with its standard error.  On a quadratic,
  S_avg = sigma^2 tr(T H T) / 2 and, at a minimum, S_max = rho^2
  lambda_max(T H T) / 2 (p = 2).
* Keskar et al. (2017) epsilon-sharpness: 100 max_{|d_i| <= eps (|w_i| + 1)}
  (L(w + d) - L(w)) / (1 + L(w)), the worst case over a box, here by the
  same ascent (Keskar used L-BFGS-B).
* The (empirical) Fisher-Rao norm (Liang et al. 2019):
  ||w||_fr^2 = w^T F w, F = (1/N) sum_n g_n g_n^T, g_n the gradient of the
  n-th example's loss; one forward-mode pass (``FisherOperator``).
* Relative flatness of a layer (Petzka et al. 2021): with w_s the incoming
  weights of neuron s (column s of a Dense kernel) and H_{s,s'} the Hessian
  block between w_s and w_s',
      kappa = sum_{s,s'} <w_s, w_s'> tr(H_{s,s'}),
  estimated without bias by z^T H z with z = r (W^T xi)^T (r, xi
  Rademacher over the layer's inputs): E[z^T H z] = kappa.
* tr(H^2) = E ||H z||^2 and the Hessian diagonal E[z * H z] (Hutchinson;
  Bekas et al. 2007), with standard errors.

Every function takes ``(model, loss, data)`` in the forms ``HessianOperator``
takes, or an evaluator already built (``evaluator=``), and never writes the
model's variables.
"""

from __future__ import annotations

import dataclasses
import numpy as np

from tf_sharpness.curvature import vectors
from tf_sharpness.curvature.evaluator import LossEvaluator
from tf_sharpness.curvature.fisher import FisherOperator
from tf_sharpness.curvature.hvp import HessianOperator
from tf_sharpness.curvature.linear_operator import flat_matvec

NORMS = ("l2", "linf")


@dataclasses.dataclass
class SharpnessResult:
  """A sharpness value; ``stderr`` for Monte-Carlo estimates; ``trace`` the
  value after each ascent step (worst case: ``value`` is its maximum, a
  lower bound on the true maximum); ``num_gradients`` and ``num_losses``
  what it cost in data passes."""
  value: float
  stderr: float | None = None
  trace: list = dataclasses.field(default_factory=list)
  num_gradients: int = 0
  num_losses: int = 0
  num_matvecs: int = 0
  lower_bound: bool = False
  base_loss: float | None = None  # L(w)
  converged: bool | None = None  # worst case: did the ascent converge (see its doc)
  remaining: float | None = None  # worst case: estimated increase still to come


def _evaluator(model, loss, data, evaluator, cls=LossEvaluator):
  if evaluator is not None:
    return evaluator
  if model is None or loss is None or data is None:
    raise ValueError("pass model, loss and data, or evaluator=")
  return cls(model, loss, data)


def _check_positive(name, value):
  if not (isinstance(value, (int, float, np.floating, np.integer)) and value > 0
          and np.isfinite(value)):
    raise ValueError(f"{name} must be a positive number, got {value!r}")


def scaling(theta: np.ndarray, adaptive: bool, offset: float = 0.0) -> np.ndarray:
  """T: ones, or |w| + offset elementwise (adaptive)."""
  return np.abs(theta) + offset if adaptive else np.ones_like(theta)


# ------------------------------------------------------------------ worst case


def worst_case_sharpness(model=None, loss=None, data=None, *, rho: float,
                         norm: str = "l2", adaptive: bool = False, steps: int = 20,
                         restarts: int = 1, m: int | None = None, seed: int = 0,
                         evaluator: LossEvaluator | None = None,
                         offset: float = 0.0, tol: float | None = None) -> SharpnessResult:
  """max over ||u||_p <= rho of L(w + T u) - L(w) (see the module doc).

  Args:
    rho: the radius; norm: "l2" or "linf"; adaptive: T = diag(|w| + offset).
    steps: ascent steps per restart (the most, with ``tol``); restarts: the
      first starts at u = 0, the others at random points of the ball.
    tol: stop a restart once the estimated value still to come is at most
      tol |value| (see the module doc); ``result.converged`` reports it.
    m: m-sharpness: the mean over disjoint subsets of m examples (``data``
      must be an (x, y) pair of arrays; a remainder is dropped).
  """
  _check_positive("rho", rho)
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
  for name, v in (("steps", steps), ("restarts", restarts)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
  if tol is not None:
    _check_positive("tol", tol)
  if m is not None:
    if evaluator is not None:
      raise ValueError("m: m-sharpness draws its own subsets; pass model, loss and data "
                       "as an (x, y) pair, not evaluator=")
    return _m_sharpness(model, loss, data, m, seed, dict(
        rho=rho, norm=norm, adaptive=adaptive, steps=steps, restarts=restarts,
        offset=offset, tol=tol))
  ev = _evaluator(model, loss, data, evaluator)
  theta = ev.parameters()
  t = scaling(theta, adaptive, offset)
  base = ev.loss_at(vectors.split_numpy(theta, ev.shapes))
  rng = np.random.default_rng(seed)
  result = SharpnessResult(value=-np.inf, lower_bound=True, num_losses=1, base_loss=base,
                           converged=True, remaining=0.0)
  for r in range(restarts):
    u = np.zeros_like(theta) if r == 0 else _random_in_ball(rng, theta.size, rho, norm)
    values = [] if r else [0.0]  # this restart's values; u = 0 is the base point
    for s in range(steps):
      value, grad = ev.loss_and_gradient_at(vectors.split_numpy(theta + t * u, ev.shapes))
      result.num_gradients += 1
      if s or r:
        result.trace.append(float(value) - base)
        values.append(float(value) - base)
      if tol is not None and _remaining(values) <= tol * abs(values[-1]):
        break
      u = _ascent_step(u, t * vectors.to_numpy(grad), rho, norm, s, rng)
    else:
      final = ev.loss_at(vectors.split_numpy(theta + t * u, ev.shapes), allow_nonfinite=True)
      result.num_losses += 1
      result.trace.append(final - base)
      values.append(final - base)
    remaining = _remaining(values)
    result.remaining = max(result.remaining, remaining)
    result.converged &= bool(np.isfinite(remaining)
                             and remaining <= (tol or 1e-3) * abs(values[-1]))
  result.value = float(np.nanmax(result.trace))
  return result


def _remaining(values) -> float:
  """The increase still to come of a linearly converging sequence: with d
  its last change and q = d / (the change before), d q / (1 - q); inf if
  that cannot be told (fewer than three values, q outside [0, 1))."""
  if len(values) < 3 or not np.all(np.isfinite(values[-3:])):
    return np.inf
  d, before = values[-1] - values[-2], values[-2] - values[-3]
  if d == 0:
    return 0.0
  q = d / before if before != 0 else np.inf
  return float(abs(d) * q / (1 - q)) if 0 <= q < 1 else np.inf


def _ascent_step(u, g, rho, norm, s, rng):
  if norm == "l2":
    size = np.linalg.norm(g)
    direction = g / size if size > 0 else _unit(rng, g.size)
    u = u + rho * direction
    return u * min(1.0, rho / np.linalg.norm(u))
  step = rho if s == 0 else 2 * rho / (s + 2)
  sign = np.sign(g)
  flat = sign == 0  # no gradient (a minimum): any vertex direction
  sign[flat] = rng.choice([-1.0, 1.0], size=int(flat.sum()))
  return np.clip(u + step * sign, -rho, rho)


def _unit(rng, n):
  v = rng.standard_normal(n)
  return v / np.linalg.norm(v)


def _random_in_ball(rng, n, rho, norm):
  if norm == "linf":
    return rng.uniform(-rho, rho, n)
  return rho * rng.uniform() ** (1 / n) * _unit(rng, n)


def _m_sharpness(model, loss, data, m, seed, kwargs) -> SharpnessResult:
  if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
    raise ValueError(f"m must be an integer >= 1, got {m!r}")
  if not isinstance(data, (tuple, list)) or len(data) != 2:
    raise ValueError("m-sharpness needs data as an (x, y) pair of arrays")
  x, y = data
  n = len(np.asarray(y))
  if m > n:
    raise ValueError(f"m={m} exceeds the {n} examples")
  order = np.random.default_rng(seed).permutation(n)
  chunks = [order[i:i + m] for i in range(0, n - m + 1, m)]
  take = lambda a, idx: np.asarray(a)[np.sort(idx)]
  ev, values, parts = None, [], []
  for i, idx in enumerate(chunks):
    sub = (take(x, idx), take(y, idx))
    if ev is None:
      ev = LossEvaluator(model, loss, sub, batch_size=max(m, 1))
    else:
      ev.set_data(sub)
    part = worst_case_sharpness(rho=kwargs["rho"], norm=kwargs["norm"],
                                adaptive=kwargs["adaptive"], steps=kwargs["steps"],
                                restarts=kwargs["restarts"], offset=kwargs["offset"],
                                tol=kwargs["tol"], seed=seed + i, evaluator=ev)
    values.append(part.value)
    parts.append(part)
  values = np.array(values)
  return SharpnessResult(
      value=float(values.mean()),
      stderr=float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None,
      trace=values.tolist(), num_gradients=sum(p.num_gradients for p in parts),
      num_losses=sum(p.num_losses for p in parts), lower_bound=True,
      converged=all(p.converged for p in parts),
      remaining=float(np.mean([p.remaining for p in parts])))


def keskar_sharpness(model=None, loss=None, data=None, *, epsilon: float = 1e-3,
                     steps: int = 20, seed: int = 0,
                     evaluator: LossEvaluator | None = None) -> SharpnessResult:
  """Keskar et al.'s epsilon-sharpness in percent (see the module doc)."""
  _check_positive("epsilon", epsilon)
  ev = _evaluator(model, loss, data, evaluator)
  worst = worst_case_sharpness(rho=epsilon, norm="linf", adaptive=True, offset=1.0,
                               steps=steps, seed=seed, evaluator=ev)
  scale = 100.0 / (1.0 + worst.base_loss)
  return dataclasses.replace(worst, value=worst.value * scale,
                             trace=[v * scale for v in worst.trace])


# ---------------------------------------------------------------- average case


def average_case_sharpness(model=None, loss=None, data=None, *, sigma: float,
                           adaptive: bool = False, samples: int = 20, seed: int = 0,
                           evaluator: LossEvaluator | None = None) -> SharpnessResult:
  """E_{d ~ N(0, sigma^2 T^2)} L(w + d) - L(w), with its standard error."""
  _check_positive("sigma", sigma)
  _check_samples(samples)
  ev = _evaluator(model, loss, data, evaluator)
  theta = ev.parameters()
  t = scaling(theta, adaptive)
  base = ev.loss_at(vectors.split_numpy(theta, ev.shapes))
  rng = np.random.default_rng(seed)
  values = np.array([
      ev.loss_at(vectors.split_numpy(theta + sigma * t * rng.standard_normal(theta.size),
                                     ev.shapes), allow_nonfinite=True) - base
      for _ in range(samples)])
  return SharpnessResult(value=float(values.mean()),
                         stderr=float(values.std(ddof=1) / np.sqrt(samples)),
                         trace=values.tolist(), num_losses=samples + 1, base_loss=base)


# --------------------------------------------------------- norms and Hutchinson


def fisher_rao_norm(model=None, per_example_loss=None, data=None, *,
                    operator: FisherOperator | None = None) -> float:
  """sqrt(w^T F w) with the empirical Fisher F (one data pass)."""
  op = operator or FisherOperator(model, per_example_loss, data)
  theta = [v.value for v in op.variables]
  fw = op.matvec(theta)
  return float(np.sqrt(max(vectors.to_numpy(theta) @ vectors.to_numpy(fw), 0.0)))


def _rademacher(rng, shape):
  return rng.choice([-1.0, 1.0], size=shape)


def _hutchinson(samples: np.ndarray) -> SharpnessResult:
  n = samples.shape[0]
  return SharpnessResult(value=float(samples.mean()),
                         stderr=float(samples.std(ddof=1) / np.sqrt(n)),
                         trace=samples.tolist(), num_matvecs=n)


def _check_samples(samples):
  if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
    raise ValueError(f"samples must be an integer >= 2, got {samples!r}")


def hessian_frobenius(operator, *, samples: int = 20, seed: int = 0) -> SharpnessResult:
  """tr(H^2) = E ||H z||^2 over Rademacher z, with its standard error."""
  _check_samples(samples)
  apply, rng = flat_matvec(operator), np.random.default_rng(seed)
  values = np.array([np.sum(apply(_rademacher(rng, operator.dim)) ** 2)
                     for _ in range(samples)])
  return _hutchinson(values)


@dataclasses.dataclass
class DiagonalResult:
  """The Hessian diagonal (flat, in variable order) and per-entry errors."""
  estimate: np.ndarray
  stderr: np.ndarray
  num_matvecs: int


def hessian_diagonal(operator, *, samples: int = 20, seed: int = 0) -> DiagonalResult:
  """E[z * H z] over Rademacher z (Bekas et al. 2007)."""
  _check_samples(samples)
  apply, rng = flat_matvec(operator), np.random.default_rng(seed)
  rows = []
  for _ in range(samples):
    z = _rademacher(rng, operator.dim)
    rows.append(z * apply(z))
  rows = np.array(rows)
  return DiagonalResult(rows.mean(0), rows.std(0, ddof=1) / np.sqrt(samples), samples)


def relative_flatness(operator: HessianOperator, layer, *, samples: int = 20,
                      seed: int = 0) -> SharpnessResult:
  """Petzka et al.'s kappa for ``layer`` (a Keras layer with a 2-D
  ``kernel``, e.g. the penultimate Dense), unbiased (see the module doc)."""
  _check_samples(samples)
  kernel = getattr(layer, "kernel", None)
  if kernel is None or len(kernel.shape) != 2:
    raise ValueError(f"relative_flatness: layer {getattr(layer, 'name', layer)!r} has "
                     "no 2-D kernel (use a Dense layer)")
  index = next((i for i, v in enumerate(operator.variables) if v is kernel), None)
  if index is None:
    raise ValueError(f"relative_flatness: layer {layer.name!r}'s kernel is not a "
                     "trainable variable of the operator's model")
  w = np.asarray(kernel.numpy(), dtype=np.float64)
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(samples):
    part = np.outer(_rademacher(rng, w.shape[0]), w.T @ _rademacher(rng, w.shape[0]))
    z = [np.zeros(s) for s in operator.shapes]
    z[index] = part
    hz = operator.matvec(z)
    values.append(float(np.sum(part * np.asarray(hz[index]))))
  return _hutchinson(np.array(values))


# ------------------------------------------------------------ named measures


@dataclasses.dataclass(frozen=True)
class Settings:
  """The settings a named measure reads (``measure``)."""
  rho: float = 0.05  # worst case: radius (l2; linf uses rho / sqrt(dim))
  sigma: float = 0.01  # average case: noise scale
  epsilon: float = 1e-3  # Keskar's box
  steps: int = 10  # ascent steps
  samples: int = 10  # Monte-Carlo / Hutchinson samples
  seed: int = 0


def _worst(norm, adaptive):
  def run(ev, s):
    rho = s.rho if norm == "l2" else s.rho / np.sqrt(ev.dim)
    return worst_case_sharpness(rho=rho, norm=norm, adaptive=adaptive, steps=s.steps,
                                seed=s.seed, evaluator=ev)
  return run


MEASURES = {
    "worst_l2": _worst("l2", False),
    "worst_linf": _worst("linf", False),
    "adaptive_l2": _worst("l2", True),
    "adaptive_linf": _worst("linf", True),
    "avg": lambda ev, s: average_case_sharpness(sigma=s.sigma, samples=max(s.samples, 2),
                                                seed=s.seed, evaluator=ev),
    "adaptive_avg": lambda ev, s: average_case_sharpness(
        sigma=s.sigma, adaptive=True, samples=max(s.samples, 2), seed=s.seed, evaluator=ev),
    "keskar": lambda ev, s: keskar_sharpness(epsilon=s.epsilon, steps=s.steps, seed=s.seed,
                                             evaluator=ev),
    "trace_h2": lambda ev, s: hessian_frobenius(ev, samples=max(s.samples, 2), seed=s.seed),
}


def measure(name: str, evaluator, settings: Settings = Settings()) -> SharpnessResult:
  """The measure ``name`` (one of ``MEASURES``) on ``evaluator`` (a
  ``HessianOperator`` for "trace_h2").  linf radii are rho / sqrt(dim), so
  the box and the l2 ball of radius rho have the same diagonal scale."""
  if name not in MEASURES:
    raise ValueError(f"sharpness measure must be one of {sorted(MEASURES)}, got {name!r}")
  return MEASURES[name](evaluator, settings)


__all__ = ["DiagonalResult", "MEASURES", "NORMS", "Settings", "SharpnessResult",
           "average_case_sharpness", "measure",
           "fisher_rao_norm", "hessian_diagonal", "hessian_frobenius", "keskar_sharpness",
           "relative_flatness", "scaling", "worst_case_sharpness"]

