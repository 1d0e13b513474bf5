"""The training loop: SGD (or NSGD, Adam) under ``tf.function`` with probes
(Hessian spectrum, densities, traces, loss-landscape probes, evaluation)
along the trajectory.  What a ``Config`` builds (strategy, model,
optimizer, probes) is in ``run_setup``; when an experiment reuses or
continues a run, in ``reuse``.

``train(config)`` runs one experiment and writes to ``config.logdir``:

* TensorBoard event files: scalars (loss, accuracy, gradient norm, step norm,
  distance from init, learning rate, top eigenvalues, trace) and Spectrum
  plugin summaries (eigenvalues with their stability thresholds, densities,
  slices, surfaces, step analyses, walks, rotations);
* ``metrics.jsonl``: one JSON object per logged step with at least ``step``
  and ``epoch``; the last line is always the final step;
* ``flags.txt``: a flagfile that reproduces the run;
* ``checkpoints/``: model, optimizer, the step, theta_0, the probes' state and
  the configuration, every ``checkpoint_every`` steps.  Batch order,
  augmentation and every probe's randomness are functions of (seed, step), so
  ``resume=True`` continues a killed run exactly (bit-identical under
  ``deterministic=True``); the rules of ``rundir`` keep the folder's data
  from being lost or mixed.

A NaN/inf loss or eigenvalue stops the run with ``Diverged`` after
everything logged so far is flushed.
"""

from __future__ import annotations

import logging
import time

import keras
import numpy as np
import tensorflow as tf

from tf_sharpness import data as data_lib
from tf_sharpness import losses as losses_lib
from tf_sharpness import probes as P
from tf_sharpness import config as config_lib
from tf_sharpness import rundir, run_setup, stability
from tf_sharpness.config import (MUTABLE_ON_RESUME, OPTIMIZERS, SCHEDULES, STRATEGIES,
                                 Config)
from tf_sharpness.errors import ConfigError, NonFiniteError
from tf_sharpness.train_step import TrainStep

log = logging.getLogger("tf_sharpness")

__all__ = ["Config", "Diverged", "OPTIMIZERS", "SCHEDULES", "STRATEGIES", "read_metrics",
           "train"]

read_metrics = rundir.read_metrics


class Diverged(RuntimeError):
  """The loss or an eigenvalue became NaN/inf; the run stopped cleanly."""


def batch_indices(cfg: Config, step: int, n_train: int, batch: int) -> np.ndarray:
  """The minibatch of ``step``: epoch-wise permutations seeded by (seed, epoch)."""
  epoch, pos = divmod(step, n_train // batch)
  perm = np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
  return perm[pos * batch:(pos + 1) * batch]


# ---------------------------------------------------------------------- train


def train(cfg: Config) -> dict:
  """Runs the experiment described by ``cfg``; returns the last record."""
  cfg.validate()
  if cfg.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(cfg.seed)
  strategy = run_setup.strategy(cfg.strategy)
  chief = run_setup.is_chief(strategy)
  run_dir = rundir.RunDirectory(cfg.logdir if chief else rundir.worker_directory())
  raw, ds, batch = _training_data(cfg)
  n_train = len(ds.train_y)
  steps_per_epoch = n_train // batch

  with strategy.scope():
    model = run_setup.model(cfg, ds.input_shape, ds.num_classes)
    optimizer = run_setup.optimizer(cfg)
    theta0 = [tf.Variable(v.value, trainable=False) for v in model.trainable_variables]
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
  trainer = TrainStep(model, optimizer, losses_lib.per_example_loss(cfg.loss),
                      strategy=strategy, augment=cfg.augment, theta0=theta0,
                      sam_rho=cfg.sam_rho, sam_adaptive=cfg.sam_adaptive)
  probes, ctx = run_setup.build_probes(cfg, model, optimizer, ds, batch=batch, strategy=strategy,
                             source=raw.source)
  ckpt = _checkpointer(cfg, run_dir, chief, model=model, optimizer=optimizer,
                      theta0=theta0, step=step_var,
                      probes=P.checkpoint_state(probes, ctx.tracker, ctx.hessian))
  start = rundir.open_run(run_dir, ckpt, resume=cfg.resume, overwrite=cfg.overwrite,
                          mutable=MUTABLE_ON_RESUME, restore_step=step_var.numpy)
  run_dir.write_flags(config_lib.flagfile_text(cfg))
  log.info("model %s: %d parameters; %d training examples, batch %d (%d steps/epoch)",
           model.name, model.count_params(), n_train, batch, steps_per_epoch)
  writer = tf.summary.create_file_writer(run_dir.path)
  metrics = run_dir.metrics_log()
  last, t_start, step = {}, time.time(), start
  try:
    with writer.as_default():
      for step in range(start, cfg.steps + 1):
        final = step == cfg.steps
        record = P.Record(step, step / steps_per_epoch)
        ctx.begin(step, record, final=final, epoch_start=step % steps_per_epoch == 0)
        ran = P.run_due(probes, ctx)
        if not final and _target_reached(cfg, record):
          ctx.final = final = True  # the end-of-run probes that did not run yet
          P.run_due([p for p in probes if p not in ran], ctx)
          record.set(target_reached=True)
        if final:
          record.set(final=True)
          record.scalar("train/distance_from_init", trainer.distance_from_init(),
                        key="distance_from_init")
          _write_or_diverge(metrics, record, trainer)
          last = record.values
          break
        logged = step % cfg.log_every == 0 or bool(ran)
        learning_rate = ctx.learning_rate  # of this step (a schedule moves after it)
        idx = batch_indices(cfg, step, n_train, batch)
        out = trainer(ds.train_x[idx], ds.train_y[idx], seed=(cfg.seed, step),
                      norms=logged,
                      gradients=any(getattr(p, "needs_step_gradients", False)
                                    for p in ran))
        for p in ran:
          p.after_step(ctx, out)
        if logged:
          _record_training(record, out, learning_rate)
          _write_or_diverge(metrics, record, trainer)
          last = record.values
          _log_progress(record, cfg.steps, optimizer, time.time() - t_start)
        step_var.assign(step + 1)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
          writer.flush()  # a checkpoint never outruns the events it resumes after
          ckpt.save(step + 1)
  except NonFiniteError as e:
    metrics.write({"step": step, "epoch": step / steps_per_epoch, "loss": None,
                   "diverged": True, "error": str(e)})
    raise Diverged(f"{e} at step {step}") from e
  finally:
    writer.flush()
    metrics.close()
  log.info("done: %d steps%s in %.1fs; logs in %s", step,
           " (target training loss reached)" if last.get("target_reached") else "",
           time.time() - t_start, run_dir.path)
  return last


def _training_data(cfg: Config):
  """The dataset of ``cfg`` (raw and prepared) and the batch size: the whole
  training set where ``cfg.batch_size`` is 0."""
  raw = data_lib.load(cfg.dataset, cfg.data_dir)
  ds = data_lib.prepare(raw, train_size=cfg.train_size,
                        validation_size=cfg.validation_size,
                        standardize=cfg.standardize, seed=cfg.seed, order=cfg.train_order)
  n_train = len(ds.train_y)
  batch = n_train if cfg.batch_size == 0 else cfg.batch_size
  if batch > n_train:
    raise ConfigError(f"`batch_size={cfg.batch_size}` exceeds the {n_train} "
                      "training examples (use 0 for full-batch GD)")
  return raw, ds, batch


def _checkpointer(cfg: Config, run_dir: rundir.RunDirectory, chief: bool,
                  **state) -> rundir.Checkpointer:
  """The run's checkpoints of ``state``.  Every multi-worker replica saves (a
  collective), the others into their own temporary folder, and all resume
  from the chief's checkpoints."""
  return rundir.Checkpointer(
      run_dir.checkpoint_dir, cfg.to_json(), **state,
      restore_directory=None if chief else rundir.RunDirectory(cfg.logdir).checkpoint_dir,
      defaults=Config.checkpoint_defaults())


def _target_reached(cfg: Config, record: P.Record) -> bool:
  loss = record.values.get("train_loss")
  return bool(cfg.target_train_loss) and loss is not None and loss <= cfg.target_train_loss


def _write_or_diverge(metrics, record: P.Record, trainer: TrainStep) -> None:
  """Writes ``record``; raises ``Diverged`` (after writing it, marked) if a
  training loss was non-finite at any step so far."""
  bad = trainer.nonfinite_step()
  if bad is not None:
    record.set(diverged=True)
  metrics.write(record.values)
  if bad is not None:
    raise Diverged(f"the training loss became non-finite at step {bad}")


def _record_training(record: P.Record, out, learning_rate: float) -> None:
  record.scalar("train/loss", out.loss, key="loss", show="loss")
  record.scalar("train/grad_norm", out.grad_norm, key="grad_norm")
  record.scalar("train/step_norm", out.step_norm, key="step_norm")
  record.scalar("train/distance_from_init", out.distance, key="distance_from_init")
  record.scalar("train/learning_rate", learning_rate, key="learning_rate")


def _log_progress(record: P.Record, steps: int, optimizer, seconds: float) -> None:
  values = record.values
  text = f"step {record.step}/{steps} epoch {values['epoch']:.2f} loss {values['loss']:.4f}"
  top = values.get("top_eigenvalues")
  if top:
    lines = stability.thresholds(optimizer, values["learning_rate"])
    text += f" lambda_max {top[0]:.4g}" + "".join(
        f" ({t.label} {t.value:.4g})" for t in lines)
  if values.get("test_accuracy") is not None:
    text += f" test_acc {values['test_accuracy']:.3f}"
  log.info("%s (%.1fs)", text, seconds)


def __getattr__(name: str):
  """``training.train_or_reuse`` and ``training.build_probes``, where they
  lived before the split (``reuse``, ``run_setup``)."""
  if name == "train_or_reuse":
    from tf_sharpness import reuse  # pylint: disable=g-import-not-at-top
    return reuse.train_or_reuse
  if name == "build_probes":
    return run_setup.build_probes
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
