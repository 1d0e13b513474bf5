"""Which probes a run has, built in one place: the training loop (from its
``Config``) and ``SpectrumCallback`` (from its arguments) both describe the
run as a ``ProbeSpec`` and call ``assemble``.

``ProbeSpec``'s fields are the ``Config`` fields that choose and configure
probes, with the same names and defaults (taken from ``Config``, not
copied), plus ``optimizer``.  A field named ``*_every`` may hold a
``Schedule`` instead of a step count (the callback's "epoch" schedules).
``assemble`` returns the probes in run order: the top-k spectrum first
whenever it is scheduled or any probe needs eigenpairs (it then records
the eigenvalues the others asked for), then the rest in ``BUILDERS``
order, then an ``EvaluationProbe`` when given evaluation sets.  How many
eigenpairs a run tracks comes from the probes alone
(``probes.eigenpairs_needed``).
"""

from __future__ import annotations

import dataclasses

from tf_sharpness import config as config_lib
from tf_sharpness.probes.base import Probe, Schedule, eigenpairs_needed
from tf_sharpness.probes import curvature as C
from tf_sharpness.probes import landscape as L
from tf_sharpness.probes.directional import DirectionalProbe
from tf_sharpness.probes.evaluation import EvaluationProbe
from tf_sharpness.probes.sharpness import SharpnessProbe

# The Config fields a probe reads (each declared, with help and default, in
# config.Config).
PROBE_FIELDS = (
    "optimizer", "spectrum_every", "spectrum_k", "spectrum_iters", "spectrum_tol",
    "spectrum_repeats", "spectrum_blocks", "nsgd_top_k", "nsgd_refresh_every",
    "slice_every", "slice_directions", "slice_alphas", "slice_2d_every", "slice_2d_points",
    "step_analysis_every", "step_factors", "walk_steps", "walk_points", "smallest_every",
    "smallest_k", "directional_every", "directional_quantities", "lambda_interval_every", "lambda_interval_batches",
    "lambda_interval_confidence", "sharpness_every", "sharpness_measures", "sharpness_rho",
    "sharpness_sigma", "sharpness_steps", "sharpness_samples", "density_every",
    "density_runs", "density_iters", "trace_every", "trace_samples", "trace_method",
    "eval_every")

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(config_lib.Config)}

ProbeSpec = dataclasses.make_dataclass(
    "ProbeSpec",
    [(name, object, dataclasses.field(default=_CONFIG_FIELDS[name].default,
                                      metadata=_CONFIG_FIELDS[name].metadata))
     for name in PROBE_FIELDS],
    frozen=True)
ProbeSpec.__doc__ = ("The probes of a run: the probe settings of ``Config`` (same names, "
                     "defaults and help); ``*_every`` may also be a ``Schedule``.")


def spec_from_config(cfg: config_lib.Config) -> ProbeSpec:
  """The probes ``cfg`` asks for."""
  return ProbeSpec(**{name: getattr(cfg, name) for name in PROBE_FIELDS})


def every(value, at_end: bool = False) -> Schedule:
  """A ``*_every`` setting as a schedule: N steps (0 = never; ``at_end``
  also runs it at the end of a run that has it on), or a ``Schedule``."""
  if isinstance(value, Schedule):
    return value
  return Schedule(every=value, at_end=at_end and bool(value))


def _walk(s, dim):
  window = config_lib.Config(walk_steps=s.walk_steps).walk_window()
  return L.WalkProbe(window, dim, points=s.walk_points)


# (is it on?, build it) for every probe but the top-k spectrum and the
# evaluation, in run order.
BUILDERS = (
    (lambda s: s.spectrum_blocks,
     lambda s, dim: C.BlockSpectrumProbe(every(s.spectrum_every, True), s.spectrum_blocks,
                                         k=s.spectrum_k)),
    (lambda s: s.optimizer == "nsgd",
     lambda s, dim: C.NSGDRefreshProbe(every(s.nsgd_refresh_every or s.spectrum_every),
                                       top_k=s.nsgd_top_k)),
    (lambda s: s.slice_every,
     lambda s, dim: L.SliceProbe(every(s.slice_every), s.slice_directions, s.slice_alphas)),
    (lambda s: s.slice_2d_every,
     lambda s, dim: L.SurfaceProbe(every(s.slice_2d_every), s.slice_2d_points)),
    (lambda s: s.step_analysis_every,
     lambda s, dim: L.StepAnalysisProbe(every(s.step_analysis_every), s.slice_directions,
                                        s.step_factors)),
    (lambda s: s.walk_steps, _walk),
    (lambda s: s.smallest_every,
     lambda s, dim: C.SmallestEigenvaluesProbe(
         every(s.smallest_every, True), k=s.smallest_k, num_iters=s.spectrum_iters,
         tol=s.spectrum_tol)),
    (lambda s: s.directional_every,
     lambda s, dim: DirectionalProbe(every(s.directional_every), s.directional_quantities)),
    (lambda s: s.lambda_interval_every,
     lambda s, dim: C.LambdaIntervalProbe(
         every(s.lambda_interval_every, True), confidence=s.lambda_interval_confidence,
         batches=s.lambda_interval_batches, tol=s.spectrum_tol)),
    (lambda s: s.sharpness_every,
     lambda s, dim: SharpnessProbe(
         every(s.sharpness_every, True), s.sharpness_measures, rho=s.sharpness_rho,
         sigma=s.sharpness_sigma, steps=s.sharpness_steps, samples=s.sharpness_samples)),
    (lambda s: s.density_every,
     lambda s, dim: C.DensityProbe(every(s.density_every, True), s.density_runs,
                                   s.density_iters)),
    (lambda s: s.trace_every,
     lambda s, dim: C.TraceProbe(every(s.trace_every, True), s.trace_samples,
                                 s.trace_method)),
    (lambda s: s.optimizer == "adam" and s.spectrum_every,
     lambda s, dim: C.PreconditionedSpectrumProbe(
         every(s.spectrum_every, True), k=1, num_iters=s.spectrum_iters,
         tol=s.spectrum_tol)),
)


def assemble(spec: ProbeSpec, *, dim: int, evaluation: tuple | None = None) -> list[Probe]:
  """The probes of ``spec`` in run order.  ``dim`` is the number of
  trainable parameters; ``evaluation`` = (model, per_example_loss, sets)
  adds the evaluation probe when ``spec.eval_every``."""
  others = [build(spec, dim) for on, build in BUILDERS if on(spec)]
  asked = eigenpairs_needed(others)
  if _is_on(spec.spectrum_every):
    k = spec.spectrum_k
  else:  # it records what the others measure: no more eigenpairs than they need
    k = min(spec.spectrum_k, asked)
  probes = ([C.SpectrumProbe(every(spec.spectrum_every, True), k=k,
                             repeats=spec.spectrum_repeats)] if k else []) + others
  if evaluation is not None and _is_on(spec.eval_every):
    model, per_example_loss, sets = evaluation
    probes.append(EvaluationProbe(every(spec.eval_every, True), model, per_example_loss,
                                  sets))
  return probes


def _is_on(value) -> bool:
  return bool(value.every or value.at_end or value.window) if isinstance(value, Schedule) \
      else bool(value)
