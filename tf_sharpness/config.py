"""The settings of one experiment (``Config``): every field is a flag of
``scripts/train.py``; ``validate`` names the flag and what is allowed."""

from __future__ import annotations

import dataclasses
import math
import re

from tf_sharpness import data as data_lib
from tf_sharpness import hvp as hvp_lib
from tf_sharpness import losses as losses_lib
from tf_sharpness import models as models_lib
from tf_sharpness import sharpness as sharpness_lib
from tf_sharpness.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "nsgd")
SCHEDULES = ("constant", "step")
STRATEGIES = ("default", "mirrored", "multi_worker")

# Fields that may differ between a run and its --resume: they do not change
# the trajectory or the meaning of what was already logged.
MUTABLE_ON_RESUME = frozenset({
    "logdir", "resume", "overwrite", "steps", "target_train_loss", "checkpoint_every",
    "log_every",
    "eval_every", "eval_size", "data_dir", "strategy", "deterministic"})


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
  target_train_loss: float = 0.0
  nsgd_gamma: float = 1.0
  nsgd_top_k: int = 5
  nsgd_complement: float = 1.0
  nsgd_refresh_every: int = 0
  sam_rho: float = 0.0
  sam_adaptive: bool = False
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
  spectrum_blocks: str = ""
  sharpness_every: int = 0
  sharpness_measures: tuple = ("worst_l2", "avg", "adaptive_l2")
  sharpness_rho: float = 0.05
  sharpness_sigma: float = 0.01
  sharpness_steps: int = 10
  sharpness_samples: int = 10
  smallest_every: int = 0
  smallest_k: int = 1
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
  overwrite: bool = False
  strategy: str = "default"
  deterministic: bool = False

  def validate(self) -> None:
    """Raises ValueError naming the flag and what is allowed."""
    choices = {"optimizer": OPTIMIZERS, "lr_schedule": SCHEDULES,
               "strategy": STRATEGIES, "loss": losses_lib.LOSSES,
               "model": tuple(sorted(models_lib.MODELS)),
               "standardize": data_lib.STANDARDIZE,
               "hessian_method": hvp_lib.METHODS,
               "parameterization": models_lib.PARAMETERIZATIONS,
               "normalization": ("batchnorm", "none"),
               "trace_method": ("hutchpp", "hutchinson")}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ConfigError(f"--{name}={getattr(self, name)!r} is not allowed; "
                         f"choose one of {list(allowed)}")
    positive = ("steps", "spectrum_k", "spectrum_iters", "nsgd_top_k", "smallest_k",
                "density_runs", "density_iters", "trace_samples", "log_every",
                "eval_size", "hessian_batch_size", "filters", "kernel_size",
                "spectrum_repeats", "sharpness_steps", "sharpness_samples",
                "depth", "width")
    for name in positive:
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
    non_negative = ("batch_size", "spectrum_every", "density_every", "sharpness_every",
                    "trace_every", "eval_every", "checkpoint_every", "smallest_every",
                    "train_size", "validation_size", "hessian_size",
                    "nsgd_refresh_every", "momentum", "nsgd_gamma",
                    "nsgd_complement", "sam_rho")
    for name in non_negative:
      if getattr(self, name) < 0:
        raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
    if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
      raise ConfigError(f"--learning_rate must be > 0, got {self.learning_rate}")
    if self.momentum > 1:
      raise ConfigError(f"--momentum must be in [0, 1], got {self.momentum}")
    if not 0 < self.hessian_fraction <= 1:
      raise ConfigError(f"--hessian_fraction must be in (0, 1], got "
                       f"{self.hessian_fraction}")
    if not self.spectrum_tol > 0:
      raise ConfigError(f"--spectrum_tol must be > 0, got {self.spectrum_tol}")
    if self.lr_schedule == "step" and not self.lr_boundaries:
      raise ConfigError("--lr_schedule=step needs --lr_boundaries (steps at "
                       "which the learning rate is multiplied by "
                       "--lr_decay_factor)")
    if list(self.lr_boundaries) != sorted(set(int(b) for b in self.lr_boundaries)):
      raise ConfigError(f"--lr_boundaries must be increasing integers, got "
                       f"{list(self.lr_boundaries)}")
    if self.optimizer == "nsgd" and self.nsgd_refresh_every == 0 and not self.spectrum_every:
      raise ConfigError("--optimizer=nsgd needs --nsgd_refresh_every > 0 or "
                       "--spectrum_every > 0 to get its directions")
    if self.target_train_loss < 0 or not math.isfinite(self.target_train_loss):
      raise ConfigError(f"--target_train_loss must be >= 0, got {self.target_train_loss}")
    if self.target_train_loss and not self.eval_every:
      raise ConfigError("--target_train_loss needs --eval_every > 0 (the training loss "
                        "is measured at the evaluations)")
    if self.sam_adaptive and not self.sam_rho:
      raise ConfigError("--sam_adaptive needs --sam_rho > 0")
    if self.nesterov and self.momentum == 0:
      raise ConfigError("--nesterov needs --momentum > 0")
    for name in ("slice_every", "slice_2d_every", "step_analysis_every"):
      if getattr(self, name) < 0:
        raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
    for name in ("landscape_size", "landscape_minibatches"):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
    for name in ("spectrum_k", "nsgd_top_k", "smallest_k"):
      if getattr(self, name) > self.spectrum_iters:
        raise ConfigError(f"--{name}={getattr(self, name)} needs at least as many "
                          f"Lanczos steps: --spectrum_iters={self.spectrum_iters} "
                          f"must be >= {getattr(self, name)}")
    if self.slice_2d_points < 3 or self.walk_points < 3:
      raise ConfigError("--slice_2d_points and --walk_points must be >= 3")
    if any(int(d) < 1 for d in self.slice_directions) or not self.slice_directions:
      raise ConfigError("--slice_directions must be eigenvector indices >= 1 "
                       f"(1 = the top one), got {list(self.slice_directions)}")
    if not self.slice_alphas or not self.step_factors:
      raise ConfigError("--slice_alphas and --step_factors must not be empty")
    probe_k = max(int(d) for d in self.slice_directions)
    if (self.slice_every or self.step_analysis_every) and probe_k > self.spectrum_iters:
      raise ConfigError(f"--slice_directions up to e{probe_k} need --spectrum_iters "
                        f">= {probe_k}, got {self.spectrum_iters}")
    self.walk_window()  # validates --walk_steps
    unknown = [m for m in self.sharpness_measures if m not in sharpness_lib.MEASURES]
    if unknown or not self.sharpness_measures:
      raise ConfigError(f"--sharpness_measures must be a list of "
                        f"{sorted(sharpness_lib.MEASURES)}, got {list(self.sharpness_measures)}")
    for name in ("sharpness_rho", "sharpness_sigma"):
      if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
        raise ConfigError(f"--{name} must be > 0, got {getattr(self, name)}")
    if self.spectrum_blocks:
      try:
        re.compile(self.spectrum_blocks)
      except re.error as e:
        raise ConfigError(f"--spectrum_blocks must be 'layer' or a regular expression "
                          f"over layer names, got {self.spectrum_blocks!r} ({e})") from None
      if not self.spectrum_every:
        raise ConfigError("--spectrum_blocks needs --spectrum_every > 0 (the blocks are "
                          "measured with the top eigenvalues)")

  def eigenpairs_needed(self) -> int:
    """How many top eigenpairs the probes of this run use (0: none)."""
    needs = [self.spectrum_k if self.spectrum_every else 0]
    if self.optimizer == "nsgd":
      needs.append(self.nsgd_top_k)
    if self.slice_every or self.step_analysis_every:
      needs.append(max(int(d) for d in self.slice_directions))
    if self.slice_2d_every:
      needs.append(2)
    return max(needs)

  def to_json(self) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}

  def walk_window(self) -> range:
    """--walk_steps=START:END as a range ('' = empty)."""
    if not self.walk_steps:
      return range(0)
    try:
      start, end = (int(v) for v in self.walk_steps.split(":"))
    except ValueError:
      raise ConfigError(f"--walk_steps must be START:END (integers), got "
                       f"{self.walk_steps!r}") from None
    if not 0 <= start < end:
      raise ConfigError(f"--walk_steps needs 0 <= START < END, got {self.walk_steps!r}")
    return range(start, end)


def flagfile_text(cfg: Config) -> str:
  """A reusable flagfile of ``cfg``: one --name=value per line."""
  lines = []
  for field in dataclasses.fields(cfg):
    value = getattr(cfg, field.name)
    if value is None:
      continue
    if isinstance(value, bool):
      lines.append(f"--{field.name}" if value else f"--no{field.name}")
    elif isinstance(value, tuple):
      lines.append(f"--{field.name}={','.join(str(v) for v in value)}")
    else:
      lines.append(f"--{field.name}={value}")
  return "\n".join(lines) + "\n"
