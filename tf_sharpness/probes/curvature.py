"""Probes of the Hessian: top-k spectrum, density, trace, preconditioned
spectrum (Adam) and NSGD's direction refresh."""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import tensorflow as tf

from tf_sharpness.curvature import blocks as blocks_lib
from tf_sharpness import stability, summary
from tf_sharpness.curvature.vectors import to_numpy as _flat
from tf_sharpness.curvature.density import spectral_density
from tf_sharpness.curvature.hvp import HessianOperator
from tf_sharpness.curvature.lanczos import top_eigenpairs
from tf_sharpness.curvature.preconditioned import PreconditionedOperator, adam_preconditioner
from tf_sharpness.probes.base import Context, Probe, Schedule
from tf_sharpness.curvature.trace import hessian_trace, hutchpp_trace

Sampler = Callable[[int, int], tuple]


class HessianSubset:
  """The data the Hessian is measured on.

  ``sample(step, repeat) -> (x, y)`` draws the subset; with ``resample`` it
  is drawn again at every measurement (same size, so the traced HVP is
  reused), otherwise once.  ``repeat`` > 0 asks for other, independent
  subsets (error bars of ``SpectrumProbe(repeats=R)``).
  """

  def __init__(self, model, loss_fn, sample: Sampler, *, resample: bool = False,
               seed: int | None = None, **operator_kwargs):
    self.model = model
    self.loss_fn = loss_fn
    self.sample = sample
    self.resample = bool(resample)
    self.seed = seed
    self.operator_kwargs = operator_kwargs
    self._main = None
    self._other = None
    # The main operator's self-check, checkpointed with the run: a resumed
    # run adopts it instead of checking again at another step.
    self.fd_check = tf.Variable("", dtype=tf.string, trainable=False, name="fd_check")

  def state(self) -> dict:
    return {"fd_check": self.fd_check}

  def _keep_check(self, check: dict) -> None:
    self.fd_check.assign(json.dumps(check))

  @classmethod
  def fixed(cls, model, loss_fn, data, **operator_kwargs) -> "HessianSubset":
    """Always the same data (an (x, y) pair or a finite tf.data.Dataset)."""
    def sample(step, repeat):
      if repeat:
        raise ValueError("repeats need a sampler of independent subsets; "
                         "fixed Hessian data has only one")
      return data
    return cls(model, loss_fn, sample, **operator_kwargs)

  def operator(self, step: int, repeat: int = 0) -> HessianOperator:
    if repeat:
      if self._other is None:
        self._other = HessianOperator(self.model, self.loss_fn,
                                      self.sample(step, repeat), **self.operator_kwargs)
      else:
        self._other.set_data(self.sample(step, repeat))
      return self._other
    if self._main is None:
      self._main = HessianOperator(self.model, self.loss_fn, self.sample(step, 0),
                                   **self.operator_kwargs)
      kept = self.fd_check.numpy().decode()
      if kept:
        self._main.adopt_check(json.loads(kept))
      self._main.check_listener = self._keep_check
    elif self.resample:
      self._main.set_data(self.sample(step, 0))
    return self._main

  def definition(self) -> dict:
    out = {"subset": "redrawn at every measurement" if self.resample else "fixed"}
    if self.seed is not None:
      out["subset_seed"] = self.seed
    return out


class SpectrumProbe(Probe):
  """Top-``k`` Hessian eigenvalues, their residuals, the rotation of the top
  subspace since the previous measurement and the optimizer's stability
  thresholds.

  Records whenever the step's eigenpairs were measured, also when another
  probe (NSGD refresh, slices) asked for them (``due_after_others``).
  ``repeats`` = R > 1 measures R - 1 more Hessian subsets for a spread.
  """

  def __init__(self, schedule: Schedule, k: int = 5, repeats: int = 1):
    super().__init__(schedule, name="spectrum")
    self.k = int(k)
    self.repeats = int(repeats)

  @property
  def eigenpairs_needed(self) -> int:
    return self.k

  def due_after_others(self, ctx: Context) -> bool:
    return ctx.has_eigenpairs

  def run(self, ctx: Context) -> None:
    m = ctx.eigenpairs()
    res, rec, step = m.result, ctx.record, ctx.step
    vals = res.eigenvalues[:self.k]
    residuals = res.residual_norms[:self.k]
    definition = {**ctx.definition, **ctx.hessian.definition(), **m.definition}
    thresholds = stability.thresholds(ctx.optimizer, ctx.learning_rate)
    rec.set(top_eigenvalues=vals.tolist(), eigenvalue_residuals=residuals.tolist(),
            spectrum_matvecs=res.num_matvecs, spectrum_warm_start=m.warm_start,
            hessian_definition=definition,
            stability_thresholds={t.label: t.value for t in thresholds})
    spread = self._spread(ctx, vals, res) if self.repeats > 1 else None
    summary.eigenvalues("hessian/top_eigenvalues", vals, step, residuals=residuals,
                        learning_rate=ctx.learning_rate,
                        momentum=float(getattr(ctx.optimizer, "momentum", 0.0) or 0.0),
                        num_matvecs=res.num_matvecs, info=definition, spread=spread,
                        thresholds=thresholds)
    for i, v in enumerate(vals):
      rec.scalar(f"hessian/eigenvalue_{i + 1}", v, show="lambda_max" if i == 0 else None)
    rec.scalar("hessian/matvecs_per_measurement", res.num_matvecs)
    if m.rotation is not None:
      rot = m.rotation
      rec.set(principal_angles=rot.principal_angles.tolist(),
              gradient_overlap=rot.gradient_overlap)
      rec.scalar("hessian/max_principal_angle", rot.principal_angles[-1])
      rec.scalar("hessian/gradient_overlap", rot.gradient_overlap)
      summary.rotation("hessian/rotation", rot.overlaps, step,
                       principal_angles=rot.principal_angles,
                       gradient_overlap=rot.gradient_overlap)

  def _spread(self, ctx: Context, vals, res):
    """The same measurement on R - 1 other Hessian subsets, started from the
    sum of this measurement's eigenvectors."""
    start = res.flat_eigenvectors()[:self.k].sum(0)
    repeats = [vals]
    for r in range(1, self.repeats):
      op = ctx.hessian.operator(ctx.step, repeat=r)
      repeats.append(top_eigenpairs(op, k=self.k, num_iters=ctx.tracker.num_iters,
                                    tol=ctx.tracker.tol, seed=ctx.seed + ctx.step + r,
                                    start=start, progress=ctx.progress).eigenvalues)
    stack = np.stack(repeats)
    spread = np.std(stack, axis=0, ddof=1)
    ctx.record.set(top_eigenvalues_mean=stack.mean(0).tolist(),
                   top_eigenvalues_std=spread.tolist())
    return spread


class SmallestEigenvaluesProbe(Probe):
  """The ``k`` algebraically smallest Hessian eigenvalues (negative ones mark
  directions of negative curvature: how far the iterate is from a minimum)."""

  def __init__(self, schedule: Schedule, k: int = 1, num_iters: int = 100,
               tol: float = 1e-3):
    super().__init__(schedule, name="smallest_eigenvalues")
    self.k, self.num_iters, self.tol = int(k), int(num_iters), float(tol)

  def run(self, ctx: Context) -> None:
    res = top_eigenpairs(ctx.hessian_operator(), k=self.k, which="smallest",
                         num_iters=self.num_iters, tol=self.tol,
                         seed=ctx.seed + ctx.step + 29, progress=ctx.progress)
    ctx.record.set(smallest_eigenvalues=res.eigenvalues.tolist(),
                   smallest_residuals=res.residual_norms.tolist())
    ctx.record.scalar("hessian/smallest_eigenvalue", res.eigenvalues[0],
                      show="lambda_min")
    summary.eigenvalues("hessian/smallest_eigenvalues", res.eigenvalues, ctx.step,
                        residuals=res.residual_norms, which="smallest",
                        num_matvecs=res.num_matvecs, thresholds=[])


class LambdaIntervalProbe(Probe):
  """An interval for the top eigenvalue of the full-data Hessian from the
  Hessian data (``subsample.lambda_max_interval``: cross-fitted lower bound,
  bootstrap upper bound, the 1/n bias-corrected value, the Lanczos
  residual apart), split into ``batches`` disjoint batches.  Records
  ``lambda_max_interval`` (with the examples a width of 10% of lambda_max
  would take), scalars ``hessian/lambda_max_lower`` and ``_upper`` and the
  Spectrum tab's interval band."""

  def __init__(self, schedule: Schedule, confidence: float = 0.9, batches: int = 16,
               tol: float = 1e-3):
    super().__init__(schedule, name="lambda_interval")
    self.confidence, self.batches, self.tol = float(confidence), int(batches), float(tol)
    self._operator = None

  def run(self, ctx: Context) -> None:
    from tf_sharpness.subsample import lambda_max_interval  # pylint: disable=g-import-not-at-top
    hessian = ctx.hessian
    if hessian is None:
      raise ValueError("the lambda_interval probe needs Hessian data")
    data = hessian.sample(ctx.step, 0)
    if isinstance(data, tf.data.Dataset):
      raise ValueError("the lambda_interval probe needs the Hessian data as (x, y) arrays, "
                       "not a tf.data.Dataset (it splits the examples into batches)")
    if self._operator is None:  # its own, reused: the main operator keeps its data
      self._operator = HessianOperator(ctx.model, hessian.loss_fn, data,
                                       **hessian.operator_kwargs)
    res = lambda_max_interval(ctx.model, hessian.loss_fn, data, confidence=self.confidence,
                              batches=self.batches, seed=ctx.seed + ctx.step, tol=self.tol,
                              operator=self._operator)
    values = {"lower": res.lower, "upper": res.upper, "plug_in": res.plug_in,
              "bias_corrected": res.bias_corrected, "residual": res.residual,
              "confidence": res.confidence, "examples": res.examples,
              "batches": res.batches, "num_matvecs": res.num_matvecs,
              "examples_for_width_10pct": res.examples_for(0.1)}
    ctx.record.set(lambda_max_interval=values)
    ctx.record.scalar("hessian/lambda_max_lower", res.lower)
    ctx.record.scalar("hessian/lambda_max_upper", res.upper)
    ctx.record.scalar("hessian/lambda_max_bias_corrected", res.bias_corrected)
    if res.lower <= res.upper:  # the cross-fitted lower bound can exceed it on a tiny sample
      summary.lambda_interval("hessian/lambda_max_interval", values, ctx.step)


class DensityProbe(Probe):
  """The spectral density by SLQ (``runs`` random starts, ``iters`` steps)."""

  def __init__(self, schedule: Schedule, runs: int = 5, iters: int = 60):
    super().__init__(schedule, name="density")
    self.runs, self.iters = int(runs), int(iters)

  def run(self, ctx: Context) -> None:
    d = spectral_density(ctx.hessian_operator(), num_runs=self.runs,
                         num_iters=self.iters, seed=ctx.seed + ctx.step,
                         progress=ctx.progress)
    summary.density("hessian/density", d.grid, d.density, ctx.step)
    ctx.record.set(density_matvecs=d.num_matvecs)


class TraceProbe(Probe):
  """tr(H) by Hutch++ (default, lower variance) or Hutchinson."""

  def __init__(self, schedule: Schedule, samples: int = 20, method: str = "hutchpp"):
    super().__init__(schedule, name="trace")
    if method not in ("hutchpp", "hutchinson"):
      raise ValueError(f"method must be 'hutchpp' or 'hutchinson', got {method!r}")
    self.samples, self.method = int(samples), method

  def run(self, ctx: Context) -> None:
    op, seed = ctx.hessian_operator(), ctx.seed + ctx.step
    if self.method == "hutchpp":
      tr = hutchpp_trace(op, num_matvecs=max(self.samples, 6), seed=seed,
                         progress=ctx.progress)
    else:
      tr = hessian_trace(op, num_samples=self.samples, seed=seed,
                         progress=ctx.progress)
    ctx.record.scalar("hessian/trace", tr.estimate, key="trace", show="hessian_trace")
    ctx.record.scalar("hessian/trace_stderr", tr.stderr, key="trace_stderr")


class PreconditionedSpectrumProbe(Probe):
  """Top-``k`` eigenvalues of P^{-1/2} H P^{-1/2} for Adam's (or RMSprop's)
  preconditioner P, with Adam's adaptive stability threshold (Cohen et al.
  2022), which applies to this spectrum rather than to H's."""

  def __init__(self, schedule: Schedule, k: int = 1, num_iters: int = 100,
               tol: float = 1e-3):
    super().__init__(schedule, name="preconditioned_spectrum")
    self.k, self.num_iters, self.tol = int(k), int(num_iters), float(tol)

  def run(self, ctx: Context) -> None:
    opt, step = ctx.optimizer, ctx.step
    if int(opt.iterations.numpy()) == 0:
      return  # Adam's second moments are zero before the first step
    hop = ctx.hessian_operator()
    op = PreconditionedOperator(hop, adam_preconditioner(opt, hop.variables))
    res = top_eigenpairs(op, k=self.k, num_iters=self.num_iters, tol=self.tol,
                         seed=ctx.seed + step + 17, progress=ctx.progress)
    thresholds = stability.preconditioned_thresholds(opt, ctx.learning_rate)
    vals = res.eigenvalues
    ctx.record.set(preconditioned_top_eigenvalues=vals.tolist(),
                   preconditioned_thresholds={t.label: t.value for t in thresholds})
    ctx.record.scalar("hessian/preconditioned_eigenvalue_1", vals[0],
                      show="preconditioned_lambda_max")
    summary.eigenvalues("hessian/preconditioned_top_eigenvalues", vals, step,
                        residuals=res.residual_norms, learning_rate=ctx.learning_rate,
                        num_matvecs=res.num_matvecs, thresholds=thresholds,
                        info={**ctx.definition, **hop.hessian_definition(),
                              "operator": "P^-1/2 H P^-1/2, P = Adam's preconditioner"})


class NSGDRefreshProbe(Probe):
  """Hands the step's top-K eigenvectors to an ``NSGD`` optimizer, and checks
  the step that follows where the projection matters.

  Without momentum the update is -eta (c (I - P) g + gamma P g) for the
  minibatch gradient g and P the projection onto the K directions, so the
  fraction of the step in their span is

      ||P dtheta|| / ||dtheta|| = gamma r / sqrt(c^2 (1 - r^2) + gamma^2 r^2),

  r = ||P g|| / ||g||.  When the driver passes the step's gradient the probe
  records this prediction beside the measured fraction (``nsgd_step``).
  """

  needs_step_gradients = True

  def __init__(self, schedule: Schedule, top_k: int):
    super().__init__(schedule, name="nsgd_refresh")
    self.top_k = int(top_k)
    self._theta = None

  @property
  def eigenpairs_needed(self) -> int:
    return self.top_k

  def run(self, ctx: Context) -> None:
    opt = ctx.optimizer
    if not hasattr(opt, "set_directions"):
      raise ValueError("the NSGD refresh needs a tf_sharpness.NSGD optimizer, "
                       f"got {type(opt).__name__}")
    if not opt.built:
      opt.build(ctx.model.trainable_variables)
    opt.set_directions(ctx.eigenpairs().result.eigenvectors)
    ctx.record.set(nsgd_refreshed=True)
    self._theta = _flat(ctx.model.trainable_variables)

  def after_step(self, ctx: Context, outputs) -> None:
    theta, self._theta = self._theta, None
    grads = getattr(outputs, "gradients", None)
    opt = ctx.optimizer
    if theta is None or grads is None or opt.momentum:
      return
    v = np.stack([_flat(d) for d in opt.get_directions()])  # (K, dim), orthonormal
    step = _flat(ctx.model.trainable_variables) - theta
    g = _flat(grads)
    r = np.linalg.norm(v @ g) / np.linalg.norm(g)
    gamma, c = opt.gamma, opt.complement
    predicted = gamma * r / np.sqrt(c**2 * (1 - r**2) + gamma**2 * r**2)
    ctx.record.set(nsgd_step={"gradient_fraction": float(r),
                              "predicted_step_fraction": float(predicted),
                              "step_fraction": float(np.linalg.norm(v @ step) /
                                                     np.linalg.norm(step))})



class BlockSpectrumProbe(Probe):
  """Per-layer curvature (``tf_sharpness.curvature.blocks``): the top-``k`` eigenvalues
  of each diagonal Hessian block H_bb and the mass ||P_b q_i||^2 of each of
  the full top eigenvectors q_i in each block.

  ``blocks``: "layer", a regular expression over layer names, or a
  ``{name: regex over variable paths}`` mapping.  Each block's Lanczos
  costs full HVPs, so a measurement costs about as many top-k measurements
  as there are blocks.
  """

  def __init__(self, schedule: Schedule, blocks: blocks_lib.BlockSpec = "layer",
               k: int = 3):
    super().__init__(schedule, name="blocks")
    self.blocks_spec = blocks
    self.k = int(k)
    self._blocks = None

  @property
  def eigenpairs_needed(self) -> int:
    return 1

  def run(self, ctx: Context) -> None:
    if self._blocks is None:
      self._blocks = blocks_lib.variable_blocks(ctx.model, self.blocks_spec)
    op = ctx.hessian_operator()
    out = {}
    for i, block in enumerate(self._blocks):
      sub = blocks_lib.BlockOperator(op, block)
      res = top_eigenpairs(sub, k=min(self.k, sub.dim), num_iters=ctx.tracker.num_iters,
                           tol=ctx.tracker.tol, seed=ctx.seed + ctx.step + i,
                           progress=ctx.progress)
      out[block.name] = {"top_eigenvalues": res.eigenvalues.tolist(),
                         "eigenvalue_residuals": res.residual_norms.tolist(),
                         "matvecs": res.num_matvecs, "parameters": sub.dim}
      ctx.record.scalar(f"hessian/blocks/{block.name}/lambda_max", res.eigenvalues[0])
    mass = blocks_lib.eigenvector_mass(ctx.eigenpairs().result.flat_eigenvectors(),
                                       op.shapes, self._blocks)
    ctx.record.set(blocks=out, eigenvector_layer_mass=mass)
    summary.blocks("hessian/blocks", out, mass, ctx.step)
