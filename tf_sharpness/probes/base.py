"""The measurement layer shared by our training loop and ``model.fit``.

A *probe* is one measurement taken along a training trajectory: it has a
``Schedule`` (every N steps, at the start of every epoch, at the end, in a
window), a ``run(context)`` that measures at the current parameters and
writes into ``context.record``, and the state it carries from one
measurement to the next as ``tf.Variable``s, returned by ``state()``: a
driver puts those into its ``tf.train.Checkpoint`` (``checkpoint_state``),
so a resumed run measures exactly as the uninterrupted one.

Per step the driver (``training.train`` or ``callbacks.SpectrumCallback``)
opens a ``Context`` and runs the due probes in order.  The context computes
the expensive shared quantities at most once per step:

* the top-k Hessian eigenpairs (``Context.eigenpairs``, through the
  ``EigenTracker``, which warm-starts Lanczos from the previous measurement
  and measures how far the top subspace rotated);
* the landscape probes' minibatches and their gradients.

A ``Record`` is what one step measured.  ``record.scalar(tag, value, key)``
writes a TensorBoard scalar and the metrics.jsonl field ``key`` in one
call; ``record.set(...)`` adds structured values (lists, dicts) to the JSON
line only; Spectrum-tab summaries go through ``tf_sharpness.summary``.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import tensorflow as tf

from tf_sharpness.curvature import tracking
from tf_sharpness.curvature.lanczos import EigenResult, ProgressFn, top_eigenpairs
from tf_sharpness.progress import LogProgress
from tf_sharpness.stability import current_learning_rate

log = logging.getLogger("tf_sharpness")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When a probe is due.

  ``every``: N > 0 for steps 0, N, 2N, ...; "epoch" for the first step of
  every epoch; 0 for never (unless ``at_end``).  ``at_end``: also at the
  final step (after the last update).  ``window``: only at steps in it (a
  range, or ``config.StepWindows`` for several).
  """
  every: int | str = 0
  at_end: bool = False
  window: object = None  # anything with ``step in window``; None: every step

  def __post_init__(self):
    if self.every != "epoch" and (isinstance(self.every, bool) or
                                  not isinstance(self.every, (int, np.integer))
                                  or self.every < 0):
      raise ValueError(f"every must be 'epoch' or an integer >= 0, got {self.every!r}")

  def due(self, step: int, *, final: bool = False, epoch_start: bool = False) -> bool:
    if self.window is not None and step not in self.window:
      return False
    if final:
      return self.at_end
    if self.every == "epoch":
      return epoch_start
    return bool(self.every) and step % self.every == 0


class Record:
  """The measurements of one step: one metrics.jsonl line and TensorBoard data.

  ``shown`` holds the headline numbers (``lambda_max``, ...) that drivers put
  into Keras' ``logs`` and the progress line.
  """

  def __init__(self, step: int, epoch: float | None = None):
    self.step = int(step)
    self.values: dict = {"step": self.step}
    if epoch is not None:
      self.values["epoch"] = epoch
    self.shown: dict = {}
    self.measured = False

  def scalar(self, tag: str, value: float, key: str | None = None,
             show: str | None = None) -> None:
    """A TensorBoard scalar ``tag``; also the JSON field ``key`` if given."""
    value = float(value)
    tf.summary.scalar(tag, value, step=self.step)
    if key:
      self.values[key] = value
      self.measured = True
    if show:
      self.shown[show] = value

  def set(self, **values) -> None:
    """JSON-only values (lists, dicts, flags)."""
    self.values.update(values)
    self.measured = True

  def __contains__(self, key: str) -> bool:
    return key in self.values

  def __getitem__(self, key: str):
    return self.values[key]


class Probe:
  """A measurement with a schedule; subclasses implement ``run``.

  ``run`` is called before the update of a step at which the probe is due;
  ``after_step`` after that update (the walk between iterates sees both
  ends of it).  ``state()`` names the variables to checkpoint.
  """

  needs_step_gradients = False  # does after_step want the step's gradient?
  needs_landscape = False  # does it evaluate the loss on LandscapeData?

  def __init__(self, schedule: Schedule, name: str):
    self.schedule = schedule
    self.name = name

  def state(self) -> dict:
    return {}

  def due(self, ctx: "Context") -> bool:
    return self.schedule.due(ctx.step, final=ctx.final, epoch_start=ctx.epoch_start)

  def due_after_others(self, ctx: "Context") -> bool:
    """Whether to run after the due probes ran although not due itself
    (the spectrum probe records eigenpairs that another probe asked for)."""
    return False

  @property
  def eigenpairs_needed(self) -> int:
    """How many top eigenpairs this probe uses (0: none)."""
    return 0

  def run(self, ctx: "Context") -> None:
    raise NotImplementedError

  def after_step(self, ctx: "Context", outputs) -> None:
    """Called after the update of a step at which ``run`` was called."""


@dataclasses.dataclass
class Measured:
  """One top-k measurement and what it took."""
  result: EigenResult
  warm_start: bool
  rotation: tracking.Rotation | None
  definition: dict


class EigenTracker:
  """Top-k Hessian eigenpairs along the trajectory.

  ``measure`` runs Lanczos to a relative residual ``tol``, warm-started
  (``warm_start``) from the previous measurement's eigenvectors, and compares
  the new top-``report_k`` subspace with the previous one.  The previous
  eigenvectors are a ``tf.Variable`` (float32, k x dim), so a resumed run
  starts its next measurement exactly as the uninterrupted run does.
  """

  def __init__(self, dim: int, k: int, *, report_k: int | None = None,
               num_iters: int = 100, tol: float = 1e-3, warm_start: bool = True,
               seed: int = 0):
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    self.k = int(k)
    self.report_k = min(int(report_k or k), self.k)
    self.num_iters = int(num_iters)
    self.tol = float(tol)
    self.warm_start = bool(warm_start)
    self.seed = int(seed)
    self.vectors = tf.Variable(tf.zeros([self.k, dim]), trainable=False,
                               name="previous_eigenvectors")
    self.valid = tf.Variable(False, trainable=False, name="previous_valid")

  def state(self) -> dict:
    return {"previous_eigenvectors": self.vectors, "previous_valid": self.valid}

  def measure(self, operator, step: int, progress: ProgressFn | None = None
              ) -> Measured:
    have_previous = bool(self.valid.numpy())
    previous = self.vectors.numpy().astype(np.float64) if have_previous else None
    warm = self.warm_start and have_previous
    start = (tracking.warm_start_vector(previous, seed=self.seed + step)
             if warm else None)
    result = top_eigenpairs(operator, k=self.k, num_iters=self.num_iters,
                            tol=self.tol, seed=self.seed + step, start=start,
                            progress=progress)
    now = result.flat_eigenvectors()
    rotation = None
    if previous is not None:
      rotation = tracking.subspace_rotation(
          previous[:self.report_k], now[:self.report_k],
          gradient=operator.gradient())
    self.vectors.assign(now.astype(np.float32))
    self.valid.assign(True)
    return Measured(result, warm, rotation, operator.hessian_definition())


class Context:
  """What probes share during a run, and the caches of the current step.

  Args:
    model, optimizer: the model being trained and its (built) optimizer.
    hessian: a ``HessianSubset`` (the operator the spectrum is measured on).
    tracker: the ``EigenTracker``, or None if no probe needs eigenpairs.
    landscape: a ``landscape_probes.LandscapeData``, or None.
    seed: base seed of random directions and start vectors.
    definition: facts about the measurement (dataset, loss, ...) merged into
      the operator's own ``hessian_definition``.
    emit: where progress lines of long measurements go (default: the
      "tf_sharpness" logger).
  """

  def __init__(self, model, optimizer, *, hessian=None, tracker=None,
               landscape=None, seed: int = 0, definition: dict | None = None,
               emit=None):
    self.model = model
    self.optimizer = optimizer
    self.hessian = hessian
    self.tracker = tracker
    self.landscape = landscape
    self.seed = int(seed)
    self.definition = dict(definition or {})
    self.emit = emit
    self.begin(0, Record(0))

  def begin(self, step: int, record: Record, *, final: bool = False,
            epoch_start: bool = False) -> None:
    """Starts step ``step``: drops the previous step's caches."""
    self.step = int(step)
    self.record = record
    self.final = final
    self.epoch_start = epoch_start
    self._measured: Measured | None = None
    self._minibatch_gradients = None
    self.progress = LogProgress(prefix=f"step {self.step}: ", emit=self.emit)

  @property
  def learning_rate(self) -> float:
    return current_learning_rate(self.optimizer)

  def hessian_operator(self):
    if self.hessian is None:
      raise ValueError("this probe needs Hessian data (hessian_data=...)")
    return self.hessian.operator(self.step)

  @property
  def has_eigenpairs(self) -> bool:
    return self._measured is not None

  def eigenpairs(self) -> Measured:
    """The top-k eigenpairs at this step (measured once, then cached)."""
    if self._measured is None:
      if self.tracker is None:
        raise ValueError("no probe declared that it needs eigenpairs")
      self._measured = self.tracker.measure(self.hessian_operator(), self.step,
                                            self.progress)
    return self._measured

  def minibatch_gradients(self):
    """(minibatches, [(loss, flat gradient)]) of this step's landscape
    minibatches, shared by the slice, surface and step-length probes."""
    if self._minibatch_gradients is None:
      self._minibatch_gradients = self.landscape.gradients(self.step)
    return self._minibatch_gradients


def run_due(probes, ctx: Context) -> list[Probe]:
  """Runs the probes due at ``ctx.step`` in order, then those that catch up
  on what the others did (``due_after_others``); returns those that ran."""
  ran = []
  for probe in probes:
    if probe.due(ctx):
      probe.run(ctx)
      ran.append(probe)
  for probe in probes:
    if probe not in ran and probe.due_after_others(ctx):
      probe.run(ctx)
      ran.append(probe)
  return ran


def eigenpairs_needed(probes) -> int:
  return max([p.eigenpairs_needed for p in probes] + [0])


def restore_checkpoint(checkpoint: tf.train.Checkpoint, path: str):
  """Restores ``checkpoint`` from ``path``, every object matched, except the
  Hessian subset's self-check record in a checkpoint written before it
  existed (that check is then made again)."""
  status = checkpoint.restore(path)
  try:
    status.assert_existing_objects_matched()
  except AssertionError as exc:
    found = re.search(r"Found (\d+) Python objects", str(exc))
    if found is None or str(exc).count("'fd_check:") != int(found.group(1)):
      raise  # something other than the check record is missing
    log.info("%s predates the self-check record; the check is made again", path)
    status.expect_partial()
  return status


def checkpoint_state(probes, tracker=None, hessian=None) -> tf.train.Checkpoint:
  """One trackable holding the state of ``probes`` (and of ``tracker`` and
  the ``HessianSubset``'s self-check)."""
  parts = {p.name: tf.train.Checkpoint(**p.state()) for p in probes if p.state()}
  if tracker is not None:
    parts["eigen_tracker"] = tf.train.Checkpoint(**tracker.state())
  if hessian is not None:
    parts["hessian_subset"] = tf.train.Checkpoint(**hessian.state())
  return tf.train.Checkpoint(**parts)
