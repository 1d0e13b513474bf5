"""Probes of the loss landscape around the current parameters: slices along
the top eigenvectors with a random control (Jastrzebski et al. 2019), 2-D
surfaces, the step-length analysis and the walk between consecutive
iterates (Xing et al. 2018).  The math is in ``tf_sharpness.landscape``."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tf_sharpness import landscape, summary
from tf_sharpness.curvature.evaluator import LossEvaluator
from tf_sharpness.probes.base import Context, Probe, Schedule


class LandscapeData:
  """Where the landscape probes evaluate the loss.

  ``evaluator``: the loss on a fixed evaluation set (the paper: the first
  1,280 training examples).  ``minibatches(step)``: ``num_minibatches``
  training minibatches of ``batch_size``, drawn with a seed of (seed, step),
  on which SGD step lengths lr |g_b^T e| and partial steps are measured.
  """

  def __init__(self, model, loss_fn, eval_data, train_data, *, batch_size: int,
               num_minibatches: int = 10, seed: int = 0, chunk_size: int = 512,
               strategy=None):
    self.evaluator = LossEvaluator(model, loss_fn, eval_data, batch_size=chunk_size,
                                   strategy=strategy)
    self.train_x, self.train_y = train_data
    self.batch_size = min(int(batch_size), len(self.train_y))
    self.num_minibatches = int(num_minibatches)
    self.seed = int(seed)
    self._minibatch_evaluator = None
    self._args = (model, loss_fn, chunk_size, strategy)

  def minibatches(self, step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng([self.seed, 99, step])
    out = []
    for _ in range(self.num_minibatches):
      idx = rng.choice(len(self.train_y), self.batch_size, replace=False)
      out.append((self.train_x[idx], self.train_y[idx]))
    return out

  @property
  def minibatch_evaluator(self) -> LossEvaluator:
    """One evaluator re-pointed at each minibatch (same size: one trace)."""
    if self._minibatch_evaluator is None:
      model, loss_fn, chunk, strategy = self._args
      first = (self.train_x[:self.batch_size], self.train_y[:self.batch_size])
      self._minibatch_evaluator = LossEvaluator(model, loss_fn, first, batch_size=chunk,
                                                strategy=strategy)
    return self._minibatch_evaluator

  def gradients(self, step: int):
    """(minibatches, [(loss, flat gradient)]) at ``step``."""
    batches = self.minibatches(step)
    return batches, landscape.minibatch_gradients(self.minibatch_evaluator, batches)


def _eigen_directions(ctx: Context, indices: Sequence[int]) -> dict:
  vecs = ctx.eigenpairs().result.eigenvectors
  return {f"e{int(i)}": vecs[int(i) - 1] for i in indices}


class SliceProbe(Probe):
  """L(theta + alpha Delta_e e) along top eigenvectors e_i, alpha in units of
  the SGD step length Delta_e = mean_b lr |g_b^T e|, and a random control
  direction at the distances of the first slice (``landscape.control_slice``)."""

  needs_landscape = True

  def __init__(self, schedule: Schedule, directions: Sequence[int] = (1, 3, 5),
               alphas: Sequence[float] = landscape.DEFAULT_ALPHAS):
    super().__init__(schedule, name="slices")
    self.directions = [int(d) for d in directions]
    self.alphas = [float(a) for a in alphas]

  @property
  def eigenpairs_needed(self) -> int:
    return max(self.directions)

  def run(self, ctx: Context) -> None:
    data, lr, step = ctx.landscape, ctx.learning_rate, ctx.step
    batches, grads = ctx.minibatch_gradients()
    slices = landscape.eigenvector_slices(
        data.evaluator, data.minibatch_evaluator, batches,
        _eigen_directions(ctx, self.directions), lr, self.alphas, gradients=grads)
    seed = ctx.seed + step
    control = landscape.control_slice(data.evaluator, slices[0], seed=seed)
    own_step = landscape.sgd_step_scale(
        data.minibatch_evaluator, batches,
        landscape.random_direction(data.evaluator, seed=seed), lr, gradients=grads)
    recorded = {}
    for sl in [*slices, control]:
      summary.loss_slice(f"landscape/slice_{sl.name}", sl.alphas, sl.losses, step,
                         direction=sl.name, scale=sl.scale,
                         extra={"distance": sl.scale,
                                **({"reference": slices[0].name,
                                    "own_step_length": own_step}
                                   if sl is control else {})})
      recorded[sl.name] = {"scale": sl.scale, "losses": sl.losses.tolist()}
    for sl in slices:
      ctx.record.scalar(f"landscape/step_length_{sl.name}", sl.scale)
    ctx.record.scalar("landscape/step_length_random", own_step)
    recorded["random"]["own_step_length"] = own_step
    ctx.record.set(slices=recorded)


class SurfaceProbe(Probe):
  """L on a ``points`` x ``points`` grid spanned by e1, e2 (+-4 SGD step
  lengths) and by two filter-normalized random directions (Li et al. 2018,
  +-1)."""

  needs_landscape = True

  def __init__(self, schedule: Schedule, points: int = 11):
    super().__init__(schedule, name="surface")
    if points < 3:
      raise ValueError(f"points must be >= 3, got {points}")
    self.points = int(points)

  @property
  def eigenpairs_needed(self) -> int:
    return 2

  def run(self, ctx: Context) -> None:
    data, lr, step = ctx.landscape, ctx.learning_rate, ctx.step
    grid = np.linspace(-1.0, 1.0, self.points)
    batches, grads = ctx.minibatch_gradients()
    e = _eigen_directions(ctx, (1, 2))
    scales = [4 * max(landscape.sgd_step_scale(data.minibatch_evaluator, batches, d, lr,
                                               gradients=grads), 1e-8)
              for d in e.values()]
    z = landscape.surface(data.evaluator, e["e1"], e["e2"], grid * scales[0],
                          grid * scales[1])
    summary.surface("landscape/surface_e1_e2", grid * scales[0], grid * scales[1], z,
                    step, directions=("e1", "e2"))
    f1, f2 = (landscape.filter_normalized_direction(data.evaluator, seed=ctx.seed + step + i)
              for i in (0, 1))
    zf = landscape.surface(data.evaluator, f1, f2, grid, grid)
    summary.surface("landscape/surface_filter_normalized", grid, grid, zf, step,
                    directions=("filter-normalized 1", "filter-normalized 2"))
    ctx.record.set(surface_e1_e2_min=_finite_min(z),
                   surface_filter_normalized_min=_finite_min(zf),
                   surface_nonfinite_points=int(np.sum(~np.isfinite(z)) +
                                                np.sum(~np.isfinite(zf))))


def _finite_min(z: np.ndarray) -> float | None:
  finite = z[np.isfinite(z)]
  return float(finite.min()) if finite.size else None


class StepAnalysisProbe(Probe):
  """Relative loss change (%) of minibatch SGD steps restricted to e_i, to a
  random direction, and of the full step, for eta' = factor * eta; and the
  SGD step with its e1 component scaled by alpha (removed, halved, kept,
  doubled; ``landscape.component_scaling``) with how often the step
  overshoots the minimum along e1."""

  needs_landscape = True

  def __init__(self, schedule: Schedule, directions: Sequence[int] = (1, 3, 5),
               factors: Sequence[float] = landscape.DEFAULT_FACTORS):
    super().__init__(schedule, name="step_analysis")
    self.directions = [int(d) for d in directions]
    self.factors = [float(f) for f in factors]

  @property
  def eigenpairs_needed(self) -> int:
    return max(self.directions)

  def run(self, ctx: Context) -> None:
    data, step = ctx.landscape, ctx.step
    batches, grads = ctx.minibatch_gradients()
    dirs = _eigen_directions(ctx, self.directions)
    dirs["random"] = landscape.random_direction(data.evaluator, seed=ctx.seed + step)
    dirs["full step"] = None
    changes = landscape.step_analysis(data.minibatch_evaluator, batches, dirs,
                                      ctx.learning_rate, self.factors, gradients=grads)
    summary.step_analysis("landscape/step_analysis", self.factors, changes, step,
                          directions=list(dirs))
    ctx.record.set(step_analysis={name: changes[i].tolist()
                                  for i, name in enumerate(dirs)})
    if 1.0 in self.factors:
      for i, name in enumerate(dirs):
        ctx.record.scalar(f"landscape/step_change_{name.replace(' ', '_')}_x1",
                          changes[i][self.factors.index(1.0)])
    e1 = landscape.component_scaling(data.minibatch_evaluator, batches,
                                     _eigen_directions(ctx, (1,))["e1"],
                                     ctx.learning_rate, gradients=grads)
    ctx.record.set(step_e1_scaling=e1.to_json())
    ctx.record.scalar("landscape/e1_overshoot_fraction", e1.overshoot_fraction)
    ctx.record.scalar("landscape/e1_increase_fraction", e1.increase_fraction)
    ctx.record.scalar("landscape/e1_line_minimum_median", float(np.nanmedian(e1.line_minimum)))


class WalkProbe(Probe):
  """The loss between consecutive iterates theta_t -> theta_{t+1} (Xing et
  al. 2018) at every step of ``window`` (a range or ``config.StepWindows``),
  and, when the driver passes the step's minibatch gradient, its cosine with
  the previous step's (none at a window's first step: the gradients must be
  consecutive).

  The previous gradient and its step are ``tf.Variable``s, so a run resumed
  inside the window logs the same cosines as the uninterrupted run.
  """

  needs_step_gradients = True
  needs_landscape = True

  def __init__(self, window: range, dim: int, points: int = 10):
    super().__init__(Schedule(every=1, window=window), name="walk")
    if points < 3:
      raise ValueError(f"points must be >= 3, got {points}")
    self.points = int(points)
    self.previous_gradient = tf.Variable(tf.zeros([dim]), trainable=False,
                                         name="previous_gradient")
    self.has_previous = tf.Variable(False, trainable=False, name="has_previous")
    self.previous_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                     name="previous_step")
    self._theta_t = None

  def state(self) -> dict:
    return {"previous_gradient": self.previous_gradient,
            "has_previous": self.has_previous, "previous_step": self.previous_step}

  def run(self, ctx: Context) -> None:
    self._theta_t = ctx.landscape.evaluator.parameters()

  def after_step(self, ctx: Context, outputs) -> None:
    evaluator = ctx.landscape.evaluator
    w = landscape.walk(evaluator, self._theta_t, evaluator.parameters(),
                       num_points=self.points)
    self._theta_t = None
    record = {"alphas": w.alphas.tolist(), "losses": w.losses.tolist(),
              "argmin": w.argmin, "min_loss": w.min_loss, "convex": w.convex,
              "interior_minimum": w.interior_minimum, "grad_cosine": None}
    grads = getattr(outputs, "gradients", None)
    if grads is not None:
      g = tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in grads], 0)
      if bool(self.has_previous.numpy()) and int(self.previous_step.numpy()) == ctx.step - 1:
        prev = self.previous_gradient.numpy().astype(np.float64)
        g64 = g.numpy().astype(np.float64)
        cos = float(g64 @ prev / max(np.linalg.norm(g64) * np.linalg.norm(prev), 1e-300))
        record["grad_cosine"] = cos
        ctx.record.scalar("walk/grad_cosine", cos)
      self.previous_gradient.assign(g)
      self.has_previous.assign(True)
      self.previous_step.assign(ctx.step)
      record["grad_norm_sq"] = float(tf.reduce_sum(tf.square(tf.cast(g, tf.float64))))
    summary.loss_slice("landscape/walk", w.alphas, w.losses, ctx.step, direction="walk",
                       extra={"argmin": w.argmin, "min_loss": w.min_loss,
                              "convex": w.convex})
    ctx.record.scalar("walk/valley_position", w.argmin)
    ctx.record.set(walk=record)
