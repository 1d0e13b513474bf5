"""The verdict of a Hessian-vector product against differences of gradients.

Shared by every engine's ``HessianOperator`` (the math and the rule are in
``tf_sharpness.curvature.hvp``'s module doc): given the exact product H r on
a random unit vector r and the central differences D(h), D(2h) of the
gradient along r,

    R = (4 D(h) - D(2h)) / 3,   c = |D(h) - D(2h)| / |R|,   e = |H r - R| / |R|,

``judge`` says "agrees" (e <= max(t, 10 c)), "disagrees" (c <= c_max and
e above that) or "inconclusive" (c > c_max: the reference itself is not
usable, e.g. across a ReLU kink), with (t, c_max) from ``LIMITS`` by the
dtype products are computed in.
"""

from __future__ import annotations

import logging

import numpy as np

# (tolerance t, largest spread c_max of a usable reference), relative.
LIMITS = {"float64": (1e-7, 1e-4), "float32": (1e-4, 1e-2),
          "float16": (1e-2, 0.1), "bfloat16": (1e-2, 0.1)}

SEED = 20190523

log = logging.getLogger("tf_sharpness")


def random_unit(shapes, dtype) -> list[np.ndarray]:
  """The seeded random unit vector r, shaped like the variables."""
  rng = np.random.default_rng(SEED)
  parts = [rng.standard_normal(s) for s in shapes]
  norm = np.sqrt(sum(float(np.sum(p * p)) for p in parts))
  return [(p / norm).astype(dtype) for p in parts]


def limits(model, dtype_name: str) -> tuple[float, float]:
  compute = getattr(getattr(model, "dtype_policy", None), "compute_dtype", None)
  if compute in ("float16", "bfloat16"):
    return LIMITS[compute]
  return LIMITS.get(dtype_name, LIMITS["float32"])


def judge(model, variables, exact: np.ndarray, d1: np.ndarray, d2: np.ndarray,
          dtype_name: str, method: str) -> dict:
  """The check's record (``status``, ``relative_error``, ``spread``, and
  ``where`` when it disagrees, which is also logged in one line)."""
  tol, max_spread = limits(model, dtype_name)
  ref = (4 * d1 - d2) / 3
  norm = np.linalg.norm(ref)
  if norm == 0:
    err, spread = (0.0 if not exact.any() else np.inf), 0.0
  else:
    err = float(np.linalg.norm(exact - ref) / norm)
    spread = float(np.linalg.norm(d1 - d2) / norm)
  tol = max(tol, 10 * spread)
  status = ("inconclusive (the steps h and 2h disagree: a kink?)" if spread > max_spread
            else "agrees" if err <= tol else "disagrees")
  out = {"status": status, "relative_error": err, "spread": spread}
  if status == "disagrees":
    out["where"] = worst_block(model, variables, exact, ref)
    log.warning("Hessian-vector products: %s differs from a difference of gradients by "
                "%.1e (tolerance %.0e; the difference is consistent to %.0e), most in the "
                "parameters of %s: an op at or after them has a wrong second derivative "
                "(a stop_gradient in a forward pass?); using finite_difference",
                method, err, tol, spread, out["where"])
  return out


def worst_block(model, variables, exact, ref) -> str:
  """The layer whose parameters' part of H r is furthest off."""
  owner = {}
  for layer in model._flatten_layers(include_self=False):
    for var in layer.trainable_variables:
      owner.setdefault(id(var), layer)
  worst, name, start = -1.0, f"model {model.name!r}", 0
  for var in variables:
    size = int(np.prod(var.shape))
    off = float(np.linalg.norm(exact[start:start + size] - ref[start:start + size]))
    start += size
    if off > worst:
      layer = owner.get(id(var))
      worst = off
      name = (f"layer {layer.name!r} ({type(layer).__name__})" if layer is not None
              else f"variable {var.path!r}")
  return name


def out_of_memory(exc: Exception) -> bool:
  return isinstance(exc, MemoryError) or type(exc).__name__ in (
      "ResourceExhaustedError", "OutOfMemoryError")


class SelfChecked:
  """The self-check's state on an operator (mixed into each engine's
  ``HessianOperator``): its record ``fd_check``, a ``check_listener`` told
  of it once made (a run checkpoints it, so a resumed run records the same),
  and ``adopt_check`` to take a record made before (then no check is made,
  and a "disagrees" keeps finite differences)."""

  fd_check: dict | None = None
  check_listener = None

  def adopt_check(self, check: dict) -> None:
    check = dict(check)
    self.fd_relative_error = check.pop("fd_relative_error", None)
    self.fd_check = check if check.get("status") != "not made" else None
    self._adopted = True
    if check.get("status") == "disagrees":
      self.method = "finite_difference"

  def _needs_fd_error(self) -> bool:
    return self.fd_relative_error is None and not getattr(self, "_adopted", False)

  def _remember(self) -> None:
    """Tells the listener the check and the finite-difference error."""
    if self.check_listener is not None:
      record = dict(self.fd_check or {"status": "not made", "relative_error": None})
      if self.fd_relative_error is not None:
        record["fd_relative_error"] = self.fd_relative_error
      self.check_listener(record)

  def _needs_check(self) -> bool:
    return (self.self_check and self.fd_check is None
            and not getattr(self, "_adopted", False)
            and self.method != "finite_difference")

  def _checked(self, check: dict) -> bool:
    """Stores ``check``; True if the method switched to finite differences."""
    self.fd_check = check
    self._remember()
    if check["status"] != "disagrees":
      return False
    self.method = "finite_difference"
    return True

  def _run_self_check(self) -> bool:
    """Makes the check with the engine's ``_check_products(r)`` on the
    seeded random unit vector r; True if the method switched to finite
    differences.  A failure of the check (other than running out of memory)
    makes it inconclusive, never breaks the measurement."""
    r = random_unit(self.shapes, self.dtype.as_numpy_dtype)
    try:
      exact, d1, d2, finite = self._check_products(r)
    except Exception as exc:  # noqa: BLE001 - a check never breaks a measurement
      if out_of_memory(exc):
        raise
      return self._checked({"status": f"inconclusive ({type(exc).__name__})",
                            "relative_error": None})
    self.num_matvecs += 3
    return self._judge_runs(exact, d1, d2, finite)

  def _judge_runs(self, exact, d1, d2, finite: bool) -> bool:
    """Judges the exact product and the two differences (flat vectors);
    True if the method switched to finite differences."""
    if not finite:
      return self._checked({"status": "inconclusive (not finite)", "relative_error": None})
    return self._checked(judge(self.model, self.variables, exact, d1, d2,
                               self.dtype.name, self.method))

  def check_definition(self) -> dict:
    check = self.fd_check or {}
    out = {"fd_check": check.get("status", "not made" if self.self_check else "off"),
           "fd_check_relative_error": check.get("relative_error")}
    if "spread" in check:
      out["fd_check_spread"] = check["spread"]
    return out
