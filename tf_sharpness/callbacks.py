"""Keras callbacks: the probes of ``tf_sharpness.probes`` inside ``model.fit``.

``SpectrumCallback(log_dir, hessian_data)`` measures the top-k Hessian
eigenvalues (and whatever other probes it is given) along ``model.fit``'s
trajectory and writes them to ``log_dir/spectrum``, beside the ``train/``
and ``validation/`` folders of ``keras.callbacks.TensorBoard(log_dir)``, so
one TensorBoard shows the Keras scalars and the Spectrum tab side by side.
The step is ``optimizer.iterations``: measurements line up across
``initial_epoch``, repeated ``fit`` calls and ``BackupAndRestore``.

``NSGDRefresh`` is the same callback with the probe that hands the top-K
eigenvectors to an ``NSGD`` optimizer.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_sharpness import probes as P
from tf_sharpness.probes.base import restore_checkpoint
from tf_sharpness import rundir
from tf_sharpness.curvature.compiled_loss import resolve_loss

log = logging.getLogger("tf_sharpness")


class SpectrumCallback(keras.callbacks.Callback):
  """Runs probes during ``model.fit``; writes TensorBoard data and
  ``metrics.jsonl`` to ``log_dir/<run>`` and the headline numbers
  (``lambda_max``, ...) into Keras' ``logs``.

  Args:
    log_dir: the ``log_dir`` of your ``keras.callbacks.TensorBoard`` (or any
      folder); None writes nothing and only feeds ``logs``.
    hessian_data: ``(x, y)`` or a finite ``tf.data.Dataset`` the Hessian is
      measured on (Jastrzebski et al.: ~5% of the training set).
    every: steps between top-k measurements, "epoch" for the start of every
      epoch, or 0 for only the end of training.
    k, tol, num_iters, warm_start: the top-k measurement (``top_eigenpairs``).
    probes: more probes (``DensityProbe``, ``TraceProbe``, ``SliceProbe``,
      ...); they run after the top-k one, in order.
    blocks: per-layer spectra with every top-k measurement
      (``probes.BlockSpectrumProbe``): "layer", a regular expression over
      layer names, or ``{name: regex over variable paths}``; None for none.
    loss: the loss whose Hessian is measured (default: the loss ``fit``
      trains on: the compiled loss, with a loss dict/list and its
      ``loss_weights``, regularizers and ``add_loss`` terms, or the model's
      own ``compute_loss``; see ``compiled_loss``).
    landscape_data: ``(x, y)`` training data for the landscape probes: the
      first ``landscape_size`` examples are the evaluation set (shuffle data
      sorted by class first, or it holds the first classes only),
      minibatches of ``landscape_batch_size`` are drawn from all of it.
    run: the subfolder of ``log_dir``.
    overwrite: a fit that starts at step 0 replaces measurements already in
      ``log_dir/<run>``; without it that is refused.  (A fit that continues
      at step S, after ``initial_epoch`` or ``BackupAndRestore``, always
      replaces what an interrupted fit wrote at steps >= S.)
    hessian_batch_size: chunk size of the Hessian passes.
    training: the mode the Hessian is taken in (recorded in each
      measurement's ``hessian_definition``): False (default) uses BatchNorm's
      moving statistics with dropout off; True uses batch statistics (moving
      ones untouched) and is refused for models with dropout or noise layers.
    seed: seed of start vectors and random directions.
    verbose: print progress of long measurements.
  """

  def __init__(self, log_dir: str | None, hessian_data, *, every: int | str = 100,
               k: int = 5, tol: float = 1e-3, num_iters: int = 100,
               warm_start: bool = True, probes: Sequence[P.Probe] = (),
               blocks: str | dict | None = None, loss=None,
               landscape_data=None, landscape_size: int = 1280,
               landscape_batch_size: int = 128, landscape_minibatches: int = 10,
               run: str = "spectrum", overwrite: bool = False,
               hessian_batch_size: int = 512, training: bool = False, seed: int = 0,
               verbose: bool = True):
    super().__init__()
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
      raise ValueError(f"k must be an integer >= 1, got {k!r}")
    self.schedule = P.Schedule(every=every, at_end=True)
    self.log_dir = log_dir
    self.hessian_data = hessian_data
    self.k, self.tol, self.num_iters, self.warm_start = k, tol, num_iters, warm_start
    self.extra_probes = list(probes)
    self.blocks = blocks
    self.loss = loss
    self.landscape_args = (landscape_data, landscape_size, landscape_batch_size,
                           landscape_minibatches)
    self.run = run
    self.overwrite = overwrite
    self.hessian_batch_size = hessian_batch_size
    self.training = bool(training)
    self.seed = seed
    self.verbose = verbose
    self.latest: dict = {}  # headline numbers of the latest measurements
    self.records: list[dict] = []  # what this callback measured, in order
    self._built = False

  # ------------------------------------------------------------------ setup

  def _spec(self) -> P.ProbeSpec:
    """This callback's probes as ``probes.assemble`` reads them (the
    training loop describes its own the same way); ``probes=`` run after."""
    return P.ProbeSpec(optimizer=None, spectrum_every=self.schedule, spectrum_k=self.k,
                       spectrum_iters=self.num_iters, spectrum_tol=self.tol,
                       spectrum_blocks=self.blocks, eval_every=0)

  def _build(self):
    model = self.model
    loss = resolve_loss(model, self.loss, who=type(self).__name__)
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow's trainer only
    spec = self._spec()
    dim = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    self.probes = P.assemble(spec, dim=dim) + self.extra_probes
    k = P.eigenpairs_needed(self.probes)
    tracker = P.EigenTracker(dim, k, report_k=spec.spectrum_k, num_iters=self.num_iters,
                             tol=self.tol, warm_start=self.warm_start, seed=self.seed)
    hessian = P.HessianSubset.fixed(model, loss, self.hessian_data,
                                    batch_size=self.hessian_batch_size,
                                    training=self.training, strategy=strategy)
    data, size, batch, minibatches = self.landscape_args
    needing = [p.name for p in self.probes if p.needs_landscape]
    if needing and data is None:
      raise ValueError(f"SpectrumCallback: the probes {needing} need "
                       "landscape_data=(x, y) (training data to evaluate the loss on)")
    self._check_execution(model)
    landscape = None
    if data is not None:
      landscape = P.LandscapeData(model, loss, (data[0][:size], data[1][:size]), data,
                                  batch_size=batch, num_minibatches=minibatches,
                                  seed=self.seed, chunk_size=self.hessian_batch_size,
                                  strategy=strategy)
    self.context = P.Context(model, model.optimizer, hessian=hessian, tracker=tracker,
                             landscape=landscape, seed=self.seed,
                             definition={"loss": getattr(loss, "name", str(loss))},
                             emit=print if self.verbose else log.info)
    self._step_var = tf.Variable(-1, dtype=tf.int64, trainable=False)
    self._state = tf.train.Checkpoint(step=self._step_var,
                                      probes=P.checkpoint_state(self.probes, tracker,
                                                                hessian))
    self._writer = self._metrics = self._dir = None
    if self.log_dir is not None:
      self._dir = rundir.RunDirectory(os.path.join(self.log_dir, self.run),
                                      flag="log_dir")
    self._built = True

  def _check_execution(self, model):
    """Callbacks see every k-th step under steps_per_execution = k: the
    schedules must fall on those steps."""
    k = int(getattr(model, "steps_per_execution", 1) or 1)
    if k == 1:
      return
    for p in self.probes:
      every = p.schedule.every
      if p.schedule.window is not None or (isinstance(every, int) and every % k):
        raise ValueError(
            f"SpectrumCallback: the model runs steps_per_execution={k} steps per "
            f"call, so callbacks see every {k}-th step; the {p.name} probe's "
            f"schedule (every={every!r}) must be a multiple of {k} (and a walk "
            "needs steps_per_execution=1)")

  def _state_manager(self):
    return tf.train.CheckpointManager(self._state, self._dir.file("state"),
                                      max_to_keep=1)

  # ------------------------------------------------------------------ hooks

  def on_train_begin(self, logs=None):
    if not self._built:
      self._build()
    opt = self.model.optimizer
    if not opt.built:
      opt.build(self.model.trainable_variables)
    step = _iterations(self.model)
    self._skip_step = None
    if self._dir is not None:
      if self._writer is not None:  # a later fit of the same callback
        self._writer.close()
      # A fit that ended cleanly at this step measured it (its final record):
      # keep that and do not measure the step again.  Anything else at or
      # after this step comes from a fit that was cut short (the model was
      # restored from a backup) and is measured again.
      records = rundir.read_metrics(self._dir.path)
      if step == 0 and records and not self.overwrite:
        raise rundir.RunDirError(
            f"SpectrumCallback: {self._dir.path} already holds measurements of an "
            "earlier fit; pass overwrite=True to replace them, or another log_dir/run")
      finished = any(r["step"] == step and r.get("final") for r in records)
      dropped = self._dir.truncate(step + 1 if finished else step)
      if dropped:
        log.warning("%s: dropped %d records at steps >= %d from an earlier fit "
                    "(resumed from a backup?)", self._dir.path, dropped, step)
      self._skip_step = step if finished else None
      self._restore_state(step)
      self._metrics = self._dir.metrics_log()
      self._writer = tf.summary.create_file_writer(self._dir.path)
    self._epoch = 0

  def _restore_state(self, step: int):
    """The probes' state (warm starts, rotation) if it was saved at ``step``."""
    latest = self._state_manager().latest_checkpoint
    if latest is None or int(tf.train.load_checkpoint(latest).get_tensor(
        "step/.ATTRIBUTES/VARIABLE_VALUE")) != step:
      return
    restore_checkpoint(self._state, latest)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_begin(self, batch, logs=None):
    step = _iterations(self.model)
    self._measure(step, epoch_start=batch == 0, epoch=self._epoch_at(batch),
                  skip=step == self._skip_step)

  def on_train_batch_end(self, batch, logs=None):
    if self._ran:
      _iterations(self.model)  # JAX: the weights into the variables first
      with self._summaries():  # after-step scalars go to our writer too
        for probe in self._ran:
          probe.after_step(self.context, None)
    self._flush_record()
    if logs is not None:
      logs.update(self.latest)

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      logs.update(self.latest)
    self._save_state()

  def on_train_end(self, logs=None):
    self._measure(_iterations(self.model), final=True,
                  epoch=float(self._epoch + 1))
    if self._record.measured:
      self._record.set(final=True)
    self._flush_record()
    self._save_state()
    if self._metrics is not None:
      self._metrics.close()
      self._writer.flush()

  # -------------------------------------------------------------- internals

  def _epoch_at(self, batch: int) -> float:
    steps = (self.params or {}).get("steps")
    return self._epoch + batch / steps if steps else float(self._epoch)

  def _measure(self, step: int, *, epoch: float, final: bool = False,
               epoch_start: bool = False, skip: bool = False):
    self._record = P.Record(step, epoch)
    self.context.begin(step, self._record, final=final, epoch_start=epoch_start)
    self._ran = []
    if not skip:
      with self._summaries():
        self._ran = P.run_due(self.probes, self.context)

  def _flush_record(self):
    record = self._record
    if not record.measured:
      return
    self.latest.update(record.shown)
    self.records.append(record.values)
    if self._metrics is not None:
      self._metrics.write(record.values)

  def _summaries(self):
    """Our writer, recording always (keras' TensorBoard callback leaves a
    ``record_if`` filter in place during fit)."""
    if self._writer is None:
      return tf.summary.record_if(False)
    return _Both(self._writer.as_default(), tf.summary.record_if(True))

  def _save_state(self):
    if self._dir is None:
      return
    self._writer.flush()  # a saved state never outruns the events written before it
    self._step_var.assign(_iterations(self.model))
    self._state_manager().save()


def _iterations(model) -> int:
  """``optimizer.iterations``, after writing the JAX trainer's state into the
  variables (during an epoch it keeps weights and optimizer state outside
  them; a sync also makes the next step read back what a probe assigned,
  such as NSGD's directions)."""
  sync = getattr(model, "jax_state_sync", None)
  if sync is not None:
    sync()
  return int(keras.ops.convert_to_numpy(model.optimizer.iterations.value))


class _Both:
  """Enters two context managers (a writer and a record_if filter)."""

  def __init__(self, a, b):
    self.a, self.b = a, b

  def __enter__(self):
    self.a.__enter__()
    self.b.__enter__()

  def __exit__(self, *exc):
    self.b.__exit__(*exc)
    return self.a.__exit__(*exc)


class NSGDRefresh(SpectrumCallback):
  """Recomputes the top-K Hessian eigenvectors and hands them to ``NSGD``.

  The paper refreshed the directions at the start of every epoch, on ~5% of
  the training data.  Each refresh warm-starts Lanczos from the previous
  directions, and its eigenvalues are recorded like any measurement of
  ``SpectrumCallback`` (in ``log_dir`` when given, and in ``logs``).

  Args:
    hessian_data: ``(x, y)`` arrays or a finite ``tf.data.Dataset`` on which
      the Hessian is measured.
    loss_fn: the loss (default: the model's compiled loss).
    every: "epoch" (at every epoch start) or N (every N optimizer steps,
      counted by ``optimizer.iterations``).
    num_iters, tol: passed to ``top_eigenpairs``.
    batch_size: chunk size of the Hessian pass.
    log_dir: optional folder, as for ``SpectrumCallback``.
  """

  def __init__(self, hessian_data, loss_fn=None, every: int | str = "epoch",
               num_iters: int = 100, tol: float = 1e-3, batch_size: int = 512,
               log_dir: str | None = None, **kwargs):
    P.Schedule(every=every)  # validates
    if every == 0:
      raise ValueError("every must be 'epoch' or a positive integer, got 0")
    super().__init__(log_dir, hessian_data, every=0, num_iters=num_iters, tol=tol,
                     loss=loss_fn, hessian_batch_size=batch_size, **kwargs)
    self.every = every

  def _spec(self) -> P.ProbeSpec:
    """The NSGD refresh on its schedule and the spectrum it measures (the
    top-K eigenvalues recorded at each refresh)."""
    opt = self.model.optimizer
    if not hasattr(opt, "set_directions"):
      raise ValueError("NSGDRefresh needs a model compiled with tf_sharpness.NSGD, "
                       f"got {type(opt).__name__}")
    return P.ProbeSpec(optimizer="nsgd", spectrum_every=P.Schedule(every=0, at_end=False),
                       spectrum_k=opt.top_k, spectrum_iters=self.num_iters,
                       spectrum_tol=self.tol, nsgd_top_k=opt.top_k,
                       nsgd_refresh_every=P.Schedule(every=self.every), eval_every=0)

  @property
  def num_refreshes(self) -> int:
    return sum(1 for r in self.records if r.get("nsgd_refreshed"))
