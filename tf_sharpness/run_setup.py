"""What a ``Config`` builds for a run: its distribution strategy, model,
optimizer (and learning-rate schedule) and probes with their shared
context.  ``training.train`` puts them together."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_sharpness import data as data_lib
from tf_sharpness import losses as losses_lib
from tf_sharpness import models as models_lib
from tf_sharpness import probes as P
from tf_sharpness.config import Config
from tf_sharpness.errors import ConfigError
from tf_sharpness.nsgd import NSGD


def strategy(name: str) -> tf.distribute.Strategy:
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


def is_chief(strategy) -> bool:
  """Whether this process writes the run folder: the "chief" task, or
  worker 0 of a cluster without one (TensorFlow's multi-worker convention)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  return resolver.task_type in (None, "chief") or (
      resolver.task_type == "worker" and resolver.task_id == 0 and
      "chief" not in resolver.cluster_spec().as_dict())


def learning_rate(cfg: Config):
  if cfg.lr_schedule == "constant":
    return cfg.learning_rate
  values = [cfg.learning_rate * cfg.lr_decay_factor**i
            for i in range(len(cfg.lr_boundaries) + 1)]
  return keras.optimizers.schedules.PiecewiseConstantDecay(
      [int(b) for b in cfg.lr_boundaries], values)


def optimizer(cfg: Config):
  lr = learning_rate(cfg)
  if cfg.optimizer == "sgd":
    return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
  if cfg.optimizer == "adam":
    return keras.optimizers.Adam(lr)
  return NSGD(lr, gamma=cfg.nsgd_gamma, top_k=cfg.nsgd_top_k,
              complement=cfg.nsgd_complement, momentum=cfg.momentum,
              nesterov=cfg.nesterov)


def model(cfg: Config, input_shape, num_classes) -> keras.Model:
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


def build_probes(cfg: Config, model, optimizer, ds: data_lib.Prepared, *,
                 batch: int, strategy=None, source: str = "") -> tuple[list, P.Context]:
  """The probes ``cfg`` asks for, in run order (``probes.assemble``), and
  their shared context."""
  mean_loss = losses_lib.mean_loss(cfg.loss)
  dim = int(sum(np.prod(v.shape) for v in model.trainable_variables))
  n_train = len(ds.train_y)
  sets = {"train": (ds.train_x[:cfg.eval_size], ds.train_y[:cfg.eval_size]),
          "test": (ds.test_x, ds.test_y), "val": (ds.val_x, ds.val_y)}
  probes = P.assemble(P.spec_from_config(cfg), dim=dim, evaluation=(
      model, losses_lib.per_example_loss(cfg.loss), sets))
  k = P.eigenpairs_needed(probes)
  if k > dim:
    raise ConfigError(f"`spectrum_k`/`nsgd_top_k`/`slice_directions` ask for {k} "
                      f"eigenpairs, but the model has only {dim} parameters")

  def hessian_sample(step, repeat):
    seed = (cfg.seed + 1000 * repeat + step if repeat else
            cfg.seed + 7 + (step if cfg.hessian_resample else 0))
    idx = data_lib.hessian_subset(n_train, cfg.hessian_fraction,
                                  size=cfg.hessian_size, seed=seed)
    return ds.train_x[idx], ds.train_y[idx]

  hessian = P.HessianSubset(
      model, mean_loss, hessian_sample, resample=cfg.hessian_resample,
      seed=None if cfg.hessian_resample else cfg.seed + 7, method=cfg.hessian_method,
      training=False, batch_size=cfg.hessian_batch_size, strategy=strategy)
  landscape = None
  if any(p.needs_landscape for p in probes):
    n = min(cfg.landscape_size, n_train)
    landscape = P.LandscapeData(
        model, mean_loss, (ds.train_x[:n], ds.train_y[:n]), (ds.train_x, ds.train_y),
        batch_size=batch, num_minibatches=cfg.landscape_minibatches, seed=cfg.seed,
        chunk_size=cfg.hessian_batch_size, strategy=strategy)
  tracker = (P.EigenTracker(dim, k, report_k=cfg.spectrum_k, num_iters=cfg.spectrum_iters,
                            tol=cfg.spectrum_tol, warm_start=cfg.spectrum_warm_start,
                            seed=cfg.seed) if k else None)
  ctx = P.Context(model, optimizer, hessian=hessian, tracker=tracker,
                  landscape=landscape, seed=cfg.seed,
                  definition={"dataset": source, "loss": cfg.loss,
                              "train_examples": n_train})
  return probes, ctx
