"""The training loop: SGD (or NSGD, Adam) under ``tf.function`` with Hessian
spectrum tracking along the trajectory.

``train(config)`` runs one experiment and writes to ``config.logdir``:

* TensorBoard event files: scalars (loss, accuracy, gradient norm, step norm,
  distance from init, learning rate, top eigenvalues, trace) and Spectrum
  plugin summaries (eigenvalues with the learning rate, densities);
* ``metrics.jsonl``: one JSON object per logged step with at least
  ``step``, ``epoch``, ``loss`` and, where measured, ``top_eigenvalues``;
* ``checkpoints/``: model, optimizer and the step every
  ``checkpoint_every`` steps.  Batch order and augmentation are functions of
  (seed, step) only, so ``resume=True`` continues a killed run exactly.

A NaN/inf loss or eigenvalue stops the run with ``Diverged`` after
everything logged so far is flushed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tf_sharpness import data as data_lib
from tf_sharpness import landscape
from tf_sharpness import losses as losses_lib
from tf_sharpness import models as models_lib
from tf_sharpness import summary
from tf_sharpness.density import spectral_density
from tf_sharpness.errors import NonFiniteError
from tf_sharpness.hvp import HessianOperator
from tf_sharpness.lanczos import top_eigenpairs
from tf_sharpness.nsgd import NSGD
from tf_sharpness import tracking
from tf_sharpness.trace import hessian_trace, hutchpp_trace

log = logging.getLogger("tf_sharpness")

OPTIMIZERS = ("sgd", "adam", "nsgd")
SCHEDULES = ("constant", "step")
STRATEGIES = ("default", "mirrored", "multi_worker")


class Diverged(RuntimeError):
  """The loss or an eigenvalue became NaN/inf; the run stopped cleanly."""


@dataclasses.dataclass
class Config:
  """One experiment.  Every field is a flag of ``scripts/train.py``."""
  logdir: str = "runs/default"
  seed: int = 0
  # data
  dataset: str = "cifar10_mini"
  data_dir: str | None = None
  train_size: int = 0
  validation_size: int = 0
  standardize: str = "per_channel"
  augment: bool = False
  # model
  model: str = "simple_cnn"
  filters: int = 32
  kernel_size: int = 3
  depth: int = 2
  width: int = 200
  activation: str = "relu"
  parameterization: str = "standard"
  normalization: str = "batchnorm"
  init_scale: float = 1.0
  # optimization
  loss: str = "xent"
  optimizer: str = "sgd"
  learning_rate: float = 0.01
  momentum: float = 0.0
  nesterov: bool = False
  lr_schedule: str = "constant"
  lr_boundaries: tuple = ()
  lr_decay_factor: float = 0.1
  batch_size: int = 128
  steps: int = 1000
  nsgd_gamma: float = 1.0
  nsgd_top_k: int = 5
  nsgd_complement: float = 1.0
  nsgd_refresh_every: int = 0
  # curvature
  spectrum_every: int = 100
  spectrum_k: int = 5
  spectrum_iters: int = 100
  spectrum_tol: float = 1e-3
  hessian_method: str = "forward_over_reverse"
  hessian_fraction: float = 0.05
  hessian_size: int = 0
  hessian_resample: bool = False
  hessian_batch_size: int = 512
  spectrum_warm_start: bool = True
  spectrum_repeats: int = 1
  density_every: int = 0
  density_runs: int = 5
  density_iters: int = 60
  trace_every: int = 0
  trace_samples: int = 20
  trace_method: str = "hutchpp"
  # landscape probes
  slice_every: int = 0
  slice_directions: tuple = (1, 3, 5)
  slice_alphas: tuple = (-16, -8, -4, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 2, 4, 8, 16)
  slice_2d_every: int = 0
  slice_2d_points: int = 11
  step_analysis_every: int = 0
  step_factors: tuple = (0.25, 0.33, 0.5, 1, 2, 3, 4)
  walk_steps: str = ""
  walk_points: int = 10
  landscape_size: int = 1280
  landscape_minibatches: int = 10
  # bookkeeping
  eval_every: int = 100
  eval_size: int = 2000
  log_every: int = 10
  checkpoint_every: int = 0
  resume: bool = False
  strategy: str = "default"
  deterministic: bool = False

  def validate(self) -> None:
    """Raises ValueError naming the flag and what is allowed."""
    choices = {"optimizer": OPTIMIZERS, "lr_schedule": SCHEDULES,
               "strategy": STRATEGIES, "loss": losses_lib.LOSSES,
               "model": tuple(sorted(models_lib.MODELS)),
               "standardize": data_lib.STANDARDIZE,
               "hessian_method": ("forward_over_reverse", "reverse_over_reverse"),
               "parameterization": models_lib.PARAMETERIZATIONS,
               "normalization": ("batchnorm", "none"),
               "trace_method": ("hutchpp", "hutchinson")}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"--{name}={getattr(self, name)!r} is not allowed; "
                         f"choose one of {list(allowed)}")
    positive = ("steps", "spectrum_k", "spectrum_iters", "nsgd_top_k",
                "density_runs", "density_iters", "trace_samples", "log_every",
                "eval_size", "hessian_batch_size", "filters", "kernel_size",
                "spectrum_repeats",
                "depth", "width")
    for name in positive:
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
    non_negative = ("batch_size", "spectrum_every", "density_every",
                    "trace_every", "eval_every", "checkpoint_every",
                    "train_size", "validation_size", "hessian_size",
                    "nsgd_refresh_every", "momentum", "nsgd_gamma",
                    "nsgd_complement")
    for name in non_negative:
      if getattr(self, name) < 0:
        raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
    if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
      raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
    if self.momentum > 1:
      raise ValueError(f"--momentum must be in [0, 1], got {self.momentum}")
    if not 0 < self.hessian_fraction <= 1:
      raise ValueError(f"--hessian_fraction must be in (0, 1], got "
                       f"{self.hessian_fraction}")
    if not self.spectrum_tol > 0:
      raise ValueError(f"--spectrum_tol must be > 0, got {self.spectrum_tol}")
    if self.lr_schedule == "step" and not self.lr_boundaries:
      raise ValueError("--lr_schedule=step needs --lr_boundaries (steps at "
                       "which the learning rate is multiplied by "
                       "--lr_decay_factor)")
    if list(self.lr_boundaries) != sorted(set(int(b) for b in self.lr_boundaries)):
      raise ValueError(f"--lr_boundaries must be increasing integers, got "
                       f"{list(self.lr_boundaries)}")
    if self.optimizer == "nsgd" and self.nsgd_refresh_every == 0 and not self.spectrum_every:
      raise ValueError("--optimizer=nsgd needs --nsgd_refresh_every > 0 or "
                       "--spectrum_every > 0 to get its directions")
    if self.nesterov and self.momentum == 0:
      raise ValueError("--nesterov needs --momentum > 0")
    for name in ("slice_every", "slice_2d_every", "step_analysis_every"):
      if getattr(self, name) < 0:
        raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
    for name in ("landscape_size", "landscape_minibatches"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.slice_2d_points < 3 or self.walk_points < 3:
      raise ValueError("--slice_2d_points and --walk_points must be >= 3")
    if any(int(d) < 1 for d in self.slice_directions) or not self.slice_directions:
      raise ValueError("--slice_directions must be eigenvector indices >= 1 "
                       f"(1 = the top one), got {list(self.slice_directions)}")
    if not self.slice_alphas or not self.step_factors:
      raise ValueError("--slice_alphas and --step_factors must not be empty")
    self.walk_window()  # validates --walk_steps

  def walk_window(self) -> range:
    """--walk_steps=START:END as a range ('' = empty)."""
    if not self.walk_steps:
      return range(0)
    try:
      start, end = (int(v) for v in self.walk_steps.split(":"))
    except ValueError:
      raise ValueError(f"--walk_steps must be START:END (integers), got "
                       f"{self.walk_steps!r}") from None
    if not 0 <= start < end:
      raise ValueError(f"--walk_steps needs 0 <= START < END, got {self.walk_steps!r}")
    return range(start, end)


# --------------------------------------------------------------------- setup


def _strategy(name: str) -> tf.distribute.Strategy:
  if name == "mirrored":
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if gpus:
      return tf.distribute.MirroredStrategy(gpus)
    # CPU replicas: reduce on one device (CPU collectives of several
    # strategies in one process can collide on instance keys).
    return tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")],
        cross_device_ops=tf.distribute.ReductionToOneDevice())
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def _learning_rate(cfg: Config):
  if cfg.lr_schedule == "constant":
    return cfg.learning_rate
  values = [cfg.learning_rate * cfg.lr_decay_factor**i
            for i in range(len(cfg.lr_boundaries) + 1)]
  return keras.optimizers.schedules.PiecewiseConstantDecay(
      [int(b) for b in cfg.lr_boundaries], values)


def _optimizer(cfg: Config):
  lr = _learning_rate(cfg)
  if cfg.optimizer == "sgd":
    return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
  if cfg.optimizer == "adam":
    return keras.optimizers.Adam(lr)
  return NSGD(lr, gamma=cfg.nsgd_gamma, top_k=cfg.nsgd_top_k,
              complement=cfg.nsgd_complement, momentum=cfg.momentum,
              nesterov=cfg.nesterov)


def _model(cfg: Config, input_shape, num_classes) -> keras.Model:
  kwargs = {
      "simple_cnn": dict(filters=cfg.filters, kernel_size=cfg.kernel_size),
      "resnet32": dict(normalization=cfg.normalization,
                       init_scale=cfg.init_scale),
      "fcn": dict(depth=cfg.depth, width=cfg.width, activation=cfg.activation,
                  parameterization=cfg.parameterization),
      "cnn": dict(depth=cfg.depth, width=cfg.width, activation=cfg.activation,
                  parameterization=cfg.parameterization),
  }[cfg.model]
  return models_lib.build(cfg.model, input_shape, num_classes, **kwargs)


class _Jsonl:
  """metrics.jsonl; on resume, lines at or after the resumed step are dropped
  so the file matches an uninterrupted run."""

  def __init__(self, path: str, resume_step: int | None):
    lines = []
    if resume_step is not None and os.path.exists(path):
      with open(path) as f:
        lines = [l for l in f if l.strip() and json.loads(l).get("step", 0) < resume_step]
    with open(path, "w") as f:
      f.writelines(lines)
    self.file = open(path, "a")

  def write(self, record: dict) -> None:
    self.file.write(json.dumps(record, allow_nan=True) + "\n")
    self.file.flush()

  def close(self):
    self.file.close()


def read_metrics(logdir: str) -> list[dict]:
  """The records of ``logdir/metrics.jsonl`` in order ([] if there is none)."""
  path = os.path.join(logdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]


def train_or_reuse(cfg: "Config") -> list[dict]:
  """Runs ``cfg`` unless ``cfg.logdir`` already holds a finished run (last
  record at ``cfg.steps`` or diverged); returns the run's metrics records.

  For experiment drivers that are started again after a stop.  A diverged
  run is logged, not raised: its last record carries ``diverged``.
  """
  records = read_metrics(cfg.logdir)
  if records and (records[-1].get("step") == cfg.steps or records[-1].get("diverged")):
    log.info("reusing the finished run in %s", cfg.logdir)
    return records
  try:
    train(cfg)
  except Diverged as e:
    log.warning("run in %s diverged: %s", cfg.logdir, e)
  return read_metrics(cfg.logdir)


# ---------------------------------------------------------------------- train


def train(cfg: Config) -> dict:
  """Runs the experiment described by ``cfg``; returns the last metrics."""
  cfg.validate()
  if cfg.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(cfg.seed)
  os.makedirs(cfg.logdir, exist_ok=True)

  raw = data_lib.load(cfg.dataset, cfg.data_dir)
  ds = data_lib.prepare(raw, train_size=cfg.train_size,
                        validation_size=cfg.validation_size,
                        standardize=cfg.standardize, seed=cfg.seed)
  n_train = len(ds.train_y)
  batch = n_train if cfg.batch_size == 0 else cfg.batch_size
  if batch > n_train:
    raise ValueError(f"--batch_size={cfg.batch_size} exceeds the {n_train} "
                     "training examples (use 0 for full-batch GD)")
  steps_per_epoch = n_train // batch
  strategy = _strategy(cfg.strategy)
  per_example = losses_lib.per_example_loss(cfg.loss)
  mean_loss = losses_lib.mean_loss(cfg.loss)

  with strategy.scope():
    model = _model(cfg, ds.input_shape, ds.num_classes)
    optimizer = _optimizer(cfg)
    optimizer.build(model.trainable_variables)
    theta0 = [tf.Variable(v.value, trainable=False) for v in model.trainable_variables]
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)

  # The previous measurement's eigenvectors (warm starts, rotation); kept in
  # the checkpoint so that a resumed run measures exactly as the original.
  num_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
  spectrum_k = max(cfg.spectrum_k, cfg.nsgd_top_k if cfg.optimizer == "nsgd" else 0,
                   max(int(d) for d in cfg.slice_directions)
                   if (cfg.slice_every or cfg.slice_2d_every or cfg.step_analysis_every)
                   else 0)
  previous = {"vectors": tf.Variable(tf.zeros([spectrum_k, num_params]),
                                     trainable=False),
              "valid": tf.Variable(False, trainable=False)}

  ckpt_dir = os.path.join(cfg.logdir, "checkpoints")
  ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, theta0=theta0,
                             step=step_var, previous_eigenvectors=previous["vectors"],
                             previous_valid=previous["valid"])
  manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=2)
  start = 0
  if cfg.resume and manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    start = int(step_var.numpy())
    log.info("resumed from %s at step %d", manager.latest_checkpoint, start)

  # The Hessian subset: fixed for the run unless --hessian_resample.
  def hessian_data(step):
    seed = cfg.seed + 7 + (step if cfg.hessian_resample else 0)
    idx = data_lib.hessian_subset(n_train, cfg.hessian_fraction,
                                  size=cfg.hessian_size, seed=seed)
    return ds.train_x[idx], ds.train_y[idx]

  operator = None

  def get_operator(step):
    nonlocal operator
    if operator is None:
      operator = HessianOperator(model, mean_loss, hessian_data(step),
                                 method=cfg.hessian_method, training=False,
                                 batch_size=cfg.hessian_batch_size,
                                 strategy=strategy)
    elif cfg.hessian_resample:
      operator.set_data(hessian_data(step))
    return operator

  eval_train = ds.train_x[:cfg.eval_size], ds.train_y[:cfg.eval_size]
  trainable = model.trainable_variables

  def replica_step(x, y, aug_seed, global_n):
    if cfg.augment:
      x = data_lib.augment(x, aug_seed)
    with tf.GradientTape() as tape:
      logits = model(x, training=True)
      losses = per_example(y, logits)
      loss = tf.reduce_sum(losses) / tf.cast(global_n, losses.dtype)
      if model.losses:
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        loss += tf.cast(tf.add_n(model.losses), loss.dtype) / replicas
    grads = tape.gradient(loss, trainable)
    optimizer.apply(grads, trainable)
    return loss, grads

  @tf.function
  def train_step(x, y, aug_seed, global_n):
    old = [tf.identity(v.value) for v in trainable]
    loss, grads = strategy.run(replica_step, args=(x, y, aug_seed, global_n))
    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
    grad_norm = tf.linalg.global_norm(grads)
    step_norm = tf.linalg.global_norm([v.value - o for v, o in zip(trainable, old)])
    dist = tf.linalg.global_norm([v.value - t for v, t in zip(trainable, theta0)])
    return loss, grad_norm, step_norm, dist, grads

  @tf.function(reduce_retracing=True)
  def eval_batch(x, y):
    logits = model(x, training=False)
    correct = tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)),
        tf.float32))
    return tf.reduce_sum(per_example(y, logits)), correct

  def evaluate(x, y):
    if len(y) == 0:
      return None, None
    total, correct = 0.0, 0.0
    for i in range(0, len(y), 1000):
      l, c = eval_batch(x[i:i + 1000], y[i:i + 1000])
      total += float(l)
      correct += float(c)
    return total / len(y), correct / len(y)

  def distribute(x, y):
    if strategy.num_replicas_in_sync == 1:
      return tf.constant(x), tf.constant(y)
    def shard(ctx, arr):
      parts = np.array_split(arr, ctx.num_replicas_in_sync)
      return tf.constant(parts[ctx.replica_id_in_sync_group])
    return (strategy.experimental_distribute_values_from_function(lambda c: shard(c, x)),
            strategy.experimental_distribute_values_from_function(lambda c: shard(c, y)))

  writer = tf.summary.create_file_writer(cfg.logdir)
  jsonl = _Jsonl(os.path.join(cfg.logdir, "metrics.jsonl"),
                 start if cfg.resume else None)
  info = {"dataset": raw.source, "train_examples": n_train,
          "hessian_examples": None, "batchnorm_mode": "inference",
          "dropout": "off", "augmentation": False, "regularizers": True,
          "reduction": "mean", "hessian_resample": cfg.hessian_resample,
          "hessian_seed": cfg.seed + 7, "loss": cfg.loss,
          "num_parameters": int(sum(np.prod(v.shape) for v in trainable))}
  log.info("model %s: %d parameters; %d training examples, batch %d "
           "(%d steps/epoch)", model.name, info["num_parameters"], n_train,
           batch, steps_per_epoch)
  last: dict = {}
  t_start = time.time()
  lr_now = lambda: float(keras.ops.convert_to_numpy(optimizer.learning_rate))
  eigvecs = None

  def measure_spectrum(step, record):
    nonlocal eigvecs
    op = get_operator(step)
    info["hessian_examples"] = op.num_examples
    k = spectrum_k
    have_previous = bool(previous["valid"].numpy())
    prev_vecs = (previous["vectors"].numpy().astype(np.float64)
                 if have_previous else None)
    warm = cfg.spectrum_warm_start and have_previous
    start = tracking.warm_start_vector(prev_vecs, seed=cfg.seed + step) if warm else None
    res = top_eigenpairs(op, k=k, num_iters=cfg.spectrum_iters,
                         tol=cfg.spectrum_tol, seed=cfg.seed + step, start=start)
    eigvecs = res.eigenvectors
    vals = res.eigenvalues[:cfg.spectrum_k]
    record.update(top_eigenvalues=vals.tolist(),
                  eigenvalue_residuals=res.residual_norms[:cfg.spectrum_k].tolist(),
                  spectrum_matvecs=res.num_matvecs, spectrum_warm_start=warm,
                  hessian_definition=info)
    spread = None
    if cfg.spectrum_repeats > 1:
      # The same measurement on other Hessian subsets: a spread for error bars.
      repeats = [vals]
      for r in range(1, cfg.spectrum_repeats):
        idx = data_lib.hessian_subset(n_train, cfg.hessian_fraction,
                                      size=cfg.hessian_size,
                                      seed=cfg.seed + 1000 * r + step)
        rop = HessianOperator(model, mean_loss, (ds.train_x[idx], ds.train_y[idx]),
                              method=cfg.hessian_method,
                              batch_size=cfg.hessian_batch_size, strategy=strategy)
        repeats.append(top_eigenpairs(rop, k=cfg.spectrum_k, num_iters=cfg.spectrum_iters,
                                      tol=cfg.spectrum_tol, seed=cfg.seed + step + r,
                                      start=res.flat_eigenvectors()[:cfg.spectrum_k].sum(0)
                                      ).eigenvalues)
      spread = np.std(np.stack(repeats), axis=0, ddof=1)
      record.update(top_eigenvalues_mean=np.mean(np.stack(repeats), 0).tolist(),
                    top_eigenvalues_std=spread.tolist())
    summary.eigenvalues("hessian/top_eigenvalues", vals, step,
                        residuals=res.residual_norms[:cfg.spectrum_k],
                        learning_rate=lr_now(),
                        momentum=cfg.momentum if cfg.optimizer != "adam" else 0.0,
                        num_matvecs=res.num_matvecs, info=info, spread=spread)
    for i, v in enumerate(vals):
      tf.summary.scalar(f"hessian/eigenvalue_{i + 1}", v, step=step)
    tf.summary.scalar("hessian/matvecs_per_measurement", res.num_matvecs, step=step)
    now = res.flat_eigenvectors()
    if prev_vecs is not None:
      rot = tracking.subspace_rotation(prev_vecs[:cfg.spectrum_k], now[:cfg.spectrum_k],
                                       gradient=op.gradient())
      record.update(principal_angles=rot.principal_angles.tolist(),
                    gradient_overlap=rot.gradient_overlap)
      tf.summary.scalar("hessian/max_principal_angle", rot.principal_angles[-1], step=step)
      tf.summary.scalar("hessian/gradient_overlap", rot.gradient_overlap, step=step)
      summary.rotation("hessian/rotation", rot.overlaps, step,
                       principal_angles=rot.principal_angles,
                       gradient_overlap=rot.gradient_overlap)
    previous["vectors"].assign(now.astype(np.float32))
    previous["valid"].assign(True)
    if cfg.density_every and step % cfg.density_every == 0:
      d = spectral_density(op, num_runs=cfg.density_runs,
                           num_iters=cfg.density_iters, seed=cfg.seed + step)
      summary.density("hessian/density", d.grid, d.density, step)
      record["density_matvecs"] = d.num_matvecs
    if cfg.trace_every and step % cfg.trace_every == 0:
      if cfg.trace_method == "hutchpp":
        tr = hutchpp_trace(op, num_matvecs=max(cfg.trace_samples, 6),
                           seed=cfg.seed + step)
      else:
        tr = hessian_trace(op, num_samples=cfg.trace_samples, seed=cfg.seed + step)
      record.update(trace=tr.estimate, trace_stderr=tr.stderr)
      tf.summary.scalar("hessian/trace", tr.estimate, step=step)
      tf.summary.scalar("hessian/trace_stderr", tr.stderr, step=step)
    return res

  walk_window = cfg.walk_window()
  probes_on = bool(cfg.slice_every or cfg.slice_2d_every or cfg.step_analysis_every)
  landscape_ops = {}
  prev_grad = None

  def get_landscape_op():
    """The loss on a fixed slice of the training data (paper: the first 1,280)."""
    if "eval" not in landscape_ops:
      n = min(cfg.landscape_size, n_train)
      landscape_ops["eval"] = HessianOperator(
          model, mean_loss, (ds.train_x[:n], ds.train_y[:n]),
          batch_size=cfg.hessian_batch_size, strategy=strategy)
    return landscape_ops["eval"]

  def minibatches(step):
    """--landscape_minibatches seeded training minibatches of --batch_size."""
    rng = np.random.default_rng([cfg.seed, 99, step])
    out = []
    for _ in range(cfg.landscape_minibatches):
      idx = rng.choice(n_train, batch, replace=False)
      out.append((ds.train_x[idx], ds.train_y[idx]))
    if "minibatch" not in landscape_ops:
      landscape_ops["minibatch"] = HessianOperator(
          model, mean_loss, out[0], batch_size=cfg.hessian_batch_size,
          strategy=strategy)
    return landscape_ops["minibatch"], out

  def run_probes(step, record, vecs):
    lr = lr_now()
    op = get_landscape_op()
    mb_op, batches = minibatches(step)
    dirs = {f"e{int(i)}": vecs[int(i) - 1] for i in cfg.slice_directions}
    dirs["random"] = landscape.random_direction(op, seed=cfg.seed + step)
    grads = landscape.minibatch_gradients(mb_op, batches)  # shared by the probes
    if cfg.slice_every and step % cfg.slice_every == 0:
      slices = landscape.eigenvector_slices(op, mb_op, batches, dirs, lr,
                                            [float(a) for a in cfg.slice_alphas],
                                            gradients=grads)
      record["slices"] = {}
      for sl in slices:
        summary.loss_slice(f"landscape/slice_{sl.name}", sl.alphas, sl.losses,
                           step, direction=sl.name, scale=sl.scale)
        tf.summary.scalar(f"landscape/step_length_{sl.name}", sl.scale, step=step)
        record["slices"][sl.name] = {"scale": sl.scale, "losses": sl.losses.tolist()}
    if cfg.slice_2d_every and step % cfg.slice_2d_every == 0:
      grid = np.linspace(-1.0, 1.0, cfg.slice_2d_points)
      e1, e2 = vecs[0], vecs[1]
      # +-4 SGD step lengths (lr |g^T e| averaged over the minibatches).
      scales = [4 * max(landscape.sgd_step_scale(mb_op, batches, e, lr, gradients=grads),
                        1e-8) for e in (e1, e2)]
      z = landscape.surface(op, e1, e2, grid * scales[0], grid * scales[1])
      summary.surface("landscape/surface_e1_e2", grid * scales[0],
                      grid * scales[1], z, step, directions=("e1", "e2"))
      f1 = landscape.filter_normalized_direction(op, seed=cfg.seed + step)
      f2 = landscape.filter_normalized_direction(op, seed=cfg.seed + step + 1)
      zf = landscape.surface(op, f1, f2, grid, grid)
      summary.surface("landscape/surface_filter_normalized", grid, grid, zf, step,
                      directions=("filter-normalized 1", "filter-normalized 2"))
      record["surface_e1_e2_min"] = float(z.min())
    if cfg.step_analysis_every and step % cfg.step_analysis_every == 0:
      dirs["full step"] = None
      factors = [float(f) for f in cfg.step_factors]
      changes = landscape.step_analysis(mb_op, batches, dirs, lr, factors,
                                        gradients=grads)
      summary.step_analysis("landscape/step_analysis", factors, changes, step,
                            directions=list(dirs))
      record["step_analysis"] = {name: changes[i].tolist()
                                 for i, name in enumerate(dirs)}
      for i, name in enumerate(dirs):
        if 1.0 in factors:
          tf.summary.scalar(f"landscape/step_change_{name.replace(' ', '_')}_x1",
                            changes[i][factors.index(1.0)], step=step)

  def run_walk(step, record, theta_t, grads, prev):
    op = get_landscape_op()
    w = landscape.walk(op, theta_t, landscape.current_parameters(op),
                       num_points=cfg.walk_points)
    g = np.concatenate([np.asarray(t, np.float64).reshape(-1) for t in grads])
    cos = None
    if prev is not None:
      cos = float(g @ prev / max(np.linalg.norm(g) * np.linalg.norm(prev), 1e-300))
      tf.summary.scalar("walk/grad_cosine", cos, step=step)
    summary.loss_slice("landscape/walk", w.alphas, w.losses, step,
                       direction="walk", extra={"argmin": w.argmin,
                                                "min_loss": w.min_loss,
                                                "convex": w.convex})
    tf.summary.scalar("walk/valley_position", w.argmin, step=step)
    record["walk"] = {"alphas": w.alphas.tolist(), "losses": w.losses.tolist(),
                      "argmin": w.argmin, "min_loss": w.min_loss,
                      "convex": w.convex, "interior_minimum": w.interior_minimum,
                      "grad_cosine": cos, "grad_norm_sq": float(g @ g)}
    return g

  try:
    with writer.as_default():
      for step in range(start, cfg.steps + 1):
        record = {"step": step, "epoch": step / steps_per_epoch}
        measure = cfg.spectrum_every and (step % cfg.spectrum_every == 0 or
                                          step == cfg.steps)
        refresh = (cfg.optimizer == "nsgd" and step < cfg.steps and
                   ((cfg.nsgd_refresh_every and step % cfg.nsgd_refresh_every == 0) or
                    (not cfg.nsgd_refresh_every and measure)))
        probe = probes_on and step < cfg.steps and any(
            every and step % every == 0 for every in
            (cfg.slice_every, cfg.slice_2d_every, cfg.step_analysis_every))
        if measure or refresh or probe:
          res = measure_spectrum(step, record)
          if refresh:
            optimizer.set_directions(res.eigenvectors)
          if probe:
            run_probes(step, record, res.eigenvectors)
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
          tl, ta = evaluate(*eval_train)
          vl, va = evaluate(ds.test_x, ds.test_y)
          record.update(train_loss=tl, train_accuracy=ta, test_loss=vl,
                        test_accuracy=va)
          if ds.val_y.size:
            record["val_loss"], record["val_accuracy"] = evaluate(ds.val_x, ds.val_y)
          for key in ("train_loss", "train_accuracy", "test_loss",
                      "test_accuracy", "val_loss", "val_accuracy"):
            if record.get(key) is not None:
              tf.summary.scalar(f"eval/{key}", record[key], step=step)
        if step == cfg.steps:
          if len(record) > 2:
            jsonl.write(record)
            last = record
          break
        epoch, pos = divmod(step, steps_per_epoch)
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
        idx = perm[pos * batch:(pos + 1) * batch]
        lr = lr_now()
        x, y = distribute(ds.train_x[idx], ds.train_y[idx])
        walking = step in walk_window
        theta_t = landscape.current_parameters(get_landscape_op()) if walking else None
        loss, gnorm, snorm, dist, grads = train_step(
            x, y, tf.constant([cfg.seed, step], tf.int64),
            tf.constant(float(batch)))
        loss, gnorm, snorm, dist = float(loss), float(gnorm), float(snorm), float(dist)
        record.update(loss=loss, grad_norm=gnorm, step_norm=snorm,
                      distance_from_init=dist, learning_rate=lr)
        if walking and math.isfinite(loss):
          prev_grad = run_walk(step, record, theta_t, grads, prev_grad)
        if not math.isfinite(loss):
          record["diverged"] = True
          jsonl.write(record)
          raise Diverged(f"loss became {loss} at step {step}")
        if step % cfg.log_every == 0 or len(record) > 7:
          for key in ("loss", "grad_norm", "step_norm", "distance_from_init",
                      "learning_rate"):
            tf.summary.scalar(f"train/{key}", record[key], step=step)
          jsonl.write(record)
          last = record
          top = record.get("top_eigenvalues")
          log.info("step %d/%d epoch %.2f loss %.4f%s%s (%.1fs)", step,
                   cfg.steps, record["epoch"], loss,
                   f" lambda_max {top[0]:.4g} (2/lr {2 / lr:.4g})" if top else "",
                   f" test_acc {record['test_accuracy']:.3f}"
                   if record.get("test_accuracy") is not None else "",
                   time.time() - t_start)
        step_var.assign(step + 1)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
          manager.save(checkpoint_number=step + 1)
  except NonFiniteError as e:
    jsonl.write({"step": step, "epoch": step / steps_per_epoch, "loss": None,
                 "diverged": True, "error": str(e)})
    raise Diverged(f"{e} at step {step}") from e
  finally:
    writer.flush()
    jsonl.close()
  log.info("done: %d steps in %.1fs; logs in %s", cfg.steps,
           time.time() - t_start, cfg.logdir)
  return last
