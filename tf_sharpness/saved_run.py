"""A run's model at its last checkpoint, with the data it trained on, to be
measured again with other settings than the run's own.

The question it answers first: the run measured lambda_max on a Hessian
subsample S of its n training examples, and a subsample's top eigenvalue
is biased upward (lambda_max is convex in H, so E lambda_max(H_S) >=
lambda_max(H)).  ``measure`` gives, at the checkpoint's weights,

* lambda_max of the full training-set Hessian H = (1/n) sum_i H_i (or of
  a uniform sample of ``examples`` of them), by Lanczos;
* lambda_max of the run's own subsample (the same examples its probes
  used), so that the two compare at the same weights;
* ``subsample.lambda_max_interval`` from that subsample, and whether it
  contains the training-set value (with the subsample as the data, the
  interval is for its population: here the training set, from which the
  subsample was drawn without replacement);
* the training loss on every example beside the loss the run reported
  (on its first `eval_size` examples: with `train_order=source` on an
  image folder, the first classes only).
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from tf_sharpness import data as data_lib
from tf_sharpness import losses as losses_lib
from tf_sharpness import rundir, run_setup
from tf_sharpness.config import Config, check_fields, like, setting, settings_from_json
from tf_sharpness.curvature.hvp import HessianOperator
from tf_sharpness.curvature.lanczos import top_eigenpairs
from tf_sharpness.errors import ConfigError
from tf_sharpness.reports import tables
from tf_sharpness.subsample import lambda_max_interval


@dataclasses.dataclass(frozen=True)
class Settings:
  """What ``tf-sharpness measure`` measures again, on which runs."""
  logdirs: tuple = setting((), "Run folders to measure at their last checkpoint.",
                           items=str, nonempty=True)
  dataset: str = setting("", "Where the runs' dataset is now ('' = where they found it).")
  examples: int = setting(0, "Training examples lambda_max is measured on (0 = all).",
                          minimum=0)
  confidence: float = like("lambda_interval_confidence")
  batches: int = like("lambda_interval_batches")
  tol: float = setting(1e-4, "Lanczos' relative residual tolerance.", minimum=1e-12)

  def __post_init__(self):
    check_fields(self)
    if self.batches % 2:
      raise ConfigError(f"`batches` must be even (two halves), got {self.batches}")


@dataclasses.dataclass
class SavedRun:
  """The checkpoint's model (weights restored), its configuration and data."""
  config: Config
  model: keras.Model
  data: data_lib.Prepared
  step: int
  logdir: str = ""  # where it was loaded from

  def hessian_subset(self) -> tuple[np.ndarray, np.ndarray]:
    """The examples the run's Hessian probes used at the checkpoint's step
    (``run_setup.build_probes``' choice: fixed, or with `hessian_resample`
    the one drawn for that step)."""
    cfg, n = self.config, len(self.data.train_y)
    seed = cfg.seed + 7 + (self.step if cfg.hessian_resample else 0)
    idx = data_lib.hessian_subset(n, cfg.hessian_fraction, size=cfg.hessian_size, seed=seed)
    return self.data.train_x[idx], self.data.train_y[idx]


def load(logdir: str, dataset: str = "") -> SavedRun:
  """The run in ``logdir`` at its last checkpoint; ``dataset``: where its
  dataset is now, if not where the run found it."""
  latest = tf.train.latest_checkpoint(os.path.join(logdir, rundir.CHECKPOINTS))
  if latest is None:
    raise ConfigError(f"`logdir={logdir}`: no checkpoint there (train with "
                      "`checkpoint_every` > 0)")
  saved = rundir.saved_config(latest)
  known = {f.name for f in dataclasses.fields(Config)}
  # (a setting the checkpoint predates takes its config.PREDATES value)
  cfg = settings_from_json(Config, {k: v for k, v in saved.items() if k in known})
  if dataset:
    cfg = dataclasses.replace(cfg, dataset=dataset)
  raw = data_lib.load(cfg.dataset, cfg.data_dir)
  ds = data_lib.prepare(raw, train_size=cfg.train_size, validation_size=cfg.validation_size,
                        standardize=cfg.standardize, seed=cfg.seed, order=cfg.train_order)
  keras.utils.set_random_seed(cfg.seed)
  model = run_setup.model(cfg, ds.input_shape, ds.num_classes)
  tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
  return SavedRun(cfg, model, ds, int(latest.rsplit("-", 1)[1]), logdir)


def measure(run: SavedRun, *, examples: int = 0, confidence: float = 0.9,
            batches: int = 16, tol: float = 1e-4, progress=None) -> dict:
  """lambda_max on ``examples`` training examples (0: all; fewer: a seeded
  uniform sample, whatever the run's `train_order`), on the run's Hessian
  subsample, and the interval from the subsample (see the module doc),
  with the HVPs each took."""
  cfg = run.config
  n = len(run.data.train_y)
  if not 0 <= examples <= n:
    raise ConfigError(f"`examples` must be in [0, {n}] (0 = all {n} training examples), "
                      f"got {examples}")
  examples = examples or n
  idx = np.sort(np.random.default_rng([cfg.seed, 11]).choice(n, examples, replace=False))
  loss = losses_lib.mean_loss(cfg.loss)
  kwargs = dict(method=cfg.hessian_method, training=False, batch_size=cfg.hessian_batch_size)
  full = HessianOperator(run.model, loss, (run.data.train_x[idx], run.data.train_y[idx]),
                         **kwargs)
  top = top_eigenpairs(full, k=1, tol=tol, seed=cfg.seed, progress=progress)
  subset = run.hessian_subset()
  sub = HessianOperator(run.model, loss, subset, **kwargs)
  sub_top = top_eigenpairs(sub, k=1, tol=tol, seed=cfg.seed)
  interval = lambda_max_interval(run.model, loss, subset, confidence=confidence,
                                 batches=batches, seed=cfg.seed, tol=tol,
                                 operator_kwargs=kwargs)
  value = float(top.eigenvalues[0])
  per_example = losses_lib.per_example_loss(cfg.loss)
  example_losses = np.concatenate([
      per_example(run.data.train_y[i:i + 500], run.model(run.data.train_x[i:i + 500],
                                                         training=False)).numpy()
      for i in range(0, n, 500)])
  return {"logdir": run.logdir or cfg.logdir, "step": run.step, "learning_rate": cfg.learning_rate,
          "examples": examples, "lambda_max": value, "matvecs": full.num_matvecs,
          "subset_examples": len(subset[1]), "subset_lambda_max": float(sub_top.eigenvalues[0]),
          "interval": {"lower": interval.lower, "upper": interval.upper,
                       "bias_corrected": interval.bias_corrected,
                       "plug_in": interval.plug_in, "confidence": interval.confidence,
                       "batches": interval.batches},
          "interval_contains": bool(interval.lower <= value <= interval.upper),
          # the training loss on every example, and on the run's own
          # train-set evaluation (its first `eval_size` examples)
          "train_loss_all": float(example_losses.mean()),
          "train_loss_evaluation_set": float(example_losses[:cfg.eval_size].mean()),
          "evaluation_set_examples": min(cfg.eval_size, n)}


def table(results: list[dict]) -> str:
  """Per run: its learning rate and 2/eta, lambda_max on the training
  examples and on the run's subsample (and their ratio), the interval
  from the subsample and whether it holds the training-set value, the
  training loss the run reported and the one on every example."""
  lines = [tables.header(["run", "step", "2/eta", "examples", "lambda_max",
                          "its ratio to 2/eta", "subsample", "subsample's lambda_max",
                          "subsample / all", "interval from the subsample", "bias-corrected",
                          "holds the training-set value", "reported training loss (examples)",
                          "training loss on all"])]
  for r in results:
    limit = 2 / r["learning_rate"]
    i = r["interval"]
    lines.append(
        f"| {os.path.basename(os.path.normpath(r['logdir']))} | {r['step']} | {limit:.1f} | "
        f"{r['examples']} | {r['lambda_max']:.2f} | {r['lambda_max'] / limit:.3f} | "
        f"{r['subset_examples']} | {r['subset_lambda_max']:.2f} | "
        f"{r['subset_lambda_max'] / r['lambda_max']:.3f} | "
        f"[{i['lower']:.2f}, {i['upper']:.2f}] at {i['confidence']:g} | "
        f"{i['bias_corrected']:.2f} | "
        f"{'yes' if r['interval_contains'] else 'no'} | "
        f"{r['train_loss_evaluation_set']:.3f} ({r['evaluation_set_examples']}) | "
        f"{r['train_loss_all']:.3f} |")
  return "\n".join(lines)
