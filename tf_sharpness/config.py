"""The settings of one experiment (``Config``): every field is a flag of
``scripts/train.py``; ``validate`` names the flag and what is allowed."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re

from tf_sharpness import data as data_lib
from tf_sharpness import directional as directional_lib
from tf_sharpness.curvature import hvp as hvp_lib
from tf_sharpness import losses as losses_lib
from tf_sharpness import models as models_lib
from tf_sharpness import sharpness as sharpness_lib
from tf_sharpness.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "nsgd")
SCHEDULES = ("constant", "step")
STRATEGIES = ("default", "mirrored", "multi_worker")

# What runs made before a setting existed did, where it differs from the
# setting's default: a checkpoint without the setting is read as this value
# (resuming or reusing it under the new default is refused, not mixed).
PREDATES = {"train_order": "source"}


def setting(default, help_text: str, *, choices=None, minimum=None, items=None,
            item_choices=None, item_minimum=None, item_above=None, distinct: bool = False,
            nonempty: bool = False, mutable_on_resume: bool = False):
  """A settings field (of ``Config`` or an experiment's ``Settings``): its
  default, its help (the flag's), the values it allows, its lower bound,
  for a tuple the type of its items (int, float or str), the values they
  may take, their bounds (``item_minimum`` <= item, ``item_above`` < item),
  whether they must be distinct and the tuple nonempty, and whether it may
  differ between a run and its ``--resume`` (it changes neither the
  trajectory nor the meaning of what was logged).  The flags
  (``cli.flags``) and ``check_fields`` read these."""
  if isinstance(default, tuple) and items is None:
    raise TypeError(f"a tuple setting needs items=int, float or str ({help_text!r})")
  return dataclasses.field(default=default, metadata={
      "help": help_text, "choices": tuple(choices) if choices is not None else None,
      "minimum": minimum, "items": items,
      "item_choices": tuple(item_choices) if item_choices is not None else None,
      "item_minimum": item_minimum, "item_above": item_above, "distinct": bool(distinct),
      "nonempty": bool(nonempty), "mutable_on_resume": bool(mutable_on_resume)})


def seeds_setting(default: tuple, help_text: str):
  """The ``seeds`` of an experiment: distinct integers >= 0, at least one."""
  return setting(default, help_text, items=int, item_minimum=0, distinct=True, nonempty=True)


def check_fields(settings) -> None:
  """Raises ``ConfigError`` naming the setting when a field of the
  dataclass ``settings`` is outside what its ``setting()`` allows."""
  for field in dataclasses.fields(settings):
    meta = field.metadata
    if "help" not in meta:
      continue
    value, allowed = getattr(settings, field.name), meta.get("choices")
    if allowed is not None and value not in allowed:
      raise ConfigError(f"`{field.name}={value!r}` is not allowed; "
                        f"choose one of {list(allowed)}")
    minimum = meta.get("minimum")
    if minimum is not None and value < minimum:
      raise ConfigError(f"`{field.name}` must be >= {minimum}, got {value}")
    items, item_choices = meta.get("items"), meta.get("item_choices")
    if items is not None:
      if not isinstance(value, (tuple, list)) or not all(_is_item(v, items) for v in value):
        raise ConfigError(f"`{field.name}` must be a tuple of {items.__name__}, got "
                          f"{value!r}")
      unknown = [v for v in value if item_choices is not None and v not in item_choices]
      if unknown:
        raise ConfigError(f"`{field.name}` must be a list of {list(item_choices)}, got "
                          f"{list(value)}")
      _check_items(field.name, list(value), meta)


def _check_items(name: str, value: list, meta) -> None:
  """A tuple setting's items against ``setting``'s item_minimum,
  item_above, distinct and nonempty."""
  if meta.get("nonempty") and not value:
    raise ConfigError(f"`{name}` must name at least one value, got []")
  low, above = meta.get("item_minimum"), meta.get("item_above")
  if low is not None and any(v < low for v in value):
    raise ConfigError(f"`{name}` must be numbers >= {low}, got {value}")
  if above is not None and any(not v > above for v in value):
    raise ConfigError(f"`{name}` must be numbers > {above}, got {value}")
  if meta.get("distinct") and len(set(value)) != len(value):
    raise ConfigError(f"`{name}` must name distinct values, got {value}")


def _is_item(value, kind) -> bool:
  """Is ``value`` an item of a tuple setting of ``kind``: numpy numbers and
  whole floats count as int, ints as float; bools never count."""
  if isinstance(value, bool):
    return False
  if kind is int:
    return isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and float(value).is_integer())
  if kind is float:
    return isinstance(value, numbers.Real)
  return isinstance(value, kind)


def settings_json(settings) -> dict:
  """A settings dataclass (``Config`` or an experiment's ``Settings``) as
  JSON: tuples become lists."""
  return {k: list(v) if isinstance(v, tuple) else v
          for k, v in dataclasses.asdict(settings).items()}


def settings_from_json(cls, data: dict):
  """``settings_json``'s inverse: lists become tuples again; a setting the
  JSON predates takes its ``PREDATES`` value (what was done before it)."""
  names = {f.name for f in dataclasses.fields(cls)}
  data = {**{k: v for k, v in PREDATES.items() if k in names}, **data}
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def like(name: str, default=dataclasses.MISSING, *, prefix: str = "", **changes):
  """An experiment's ``Settings`` field that is the ``Config`` setting
  ``name`` (its help, choices, bounds and items, not a copy) with another
  default, its help after ``prefix``, or other metadata in ``changes``
  (e.g. a higher ``minimum``)."""
  field = {f.name: f for f in dataclasses.fields(Config)}[name]
  meta = {**field.metadata, **changes}
  meta["help"] = prefix + meta["help"]
  return dataclasses.field(default=field.default if default is dataclasses.MISSING else default,
                           metadata=meta)


@dataclasses.dataclass
class Config:
  """One experiment.  Every field is a flag of ``scripts/train.py``."""
  logdir: str = setting("runs/default",
      "Output folder: event files, metrics.jsonl, flags.txt, checkpoints.", mutable_on_resume=True)
  seed: int = setting(0, "Seed of initialization, data order, subsets and Lanczos.")
  # data
  dataset: str = setting("cifar10_mini",
      "cifar10_mini (embedded, offline), a tfds name, or a path to an image folder / "
      ".tar.gz laid out as ROOT/{train,test}/<class>/*.jpg.")
  data_dir: str | None = setting(None, "tensorflow-datasets data_dir.", mutable_on_resume=True)
  train_size: int = setting(0,
      "Seeded class-balanced training subset size (0 = all).",
      minimum=0)
  validation_size: int = setting(0,
      "Examples held out of training as a validation split.",
      minimum=0)
  standardize: str = setting("per_channel",
      "Input standardization with training-split statistics.",
      choices=data_lib.STANDARDIZE)
  train_order: str = setting("shuffled",
      "Order of the training examples: shuffled (seeded: every first-N subset, the "
      "train-set evaluation's --eval_size and the probes' --landscape_size, is a uniform "
      "sample) or source (the dataset's; an image folder's is class by class, so a first "
      "N holds the first classes only; what runs made before 2026-12-07 used).",
      choices=data_lib.ORDERS)
  augment: bool = setting(False, "Random 4-pixel shifts and horizontal flips.")
  # model
  model: str = setting("simple_cnn", "Model name.", choices=tuple(sorted(models_lib.MODELS)))
  filters: int = setting(32, "simple_cnn: filters F.", minimum=1)
  kernel_size: int = setting(3, "simple_cnn: kernel size.", minimum=1)
  depth: int = setting(2, "fcn/cnn: number of hidden layers.", minimum=1)
  width: int = setting(200, "fcn/cnn: units or channels per layer.", minimum=1)
  activation: str = setting("relu", "fcn/cnn: activation.")
  parameterization: str = setting("standard",
      "fcn: standard or NTK parameterization.",
      choices=models_lib.PARAMETERIZATIONS)
  normalization: str = setting("batchnorm",
      "resnet32: batchnorm or none.",
      choices=("batchnorm", "none"))
  init_scale: float = setting(1.0,
      "resnet32: factor on the He-normal variance 2/fan_in (paper: 1/15 without BN).")
  # optimization
  loss: str = setting("xent",
      "xent (softmax cross-entropy) or mse (0.5 ||f - onehot||^2).",
      choices=losses_lib.LOSSES)
  optimizer: str = setting("sgd", "Optimizer.", choices=OPTIMIZERS)
  learning_rate: float = setting(0.01, "Learning rate eta.")
  momentum: float = setting(0.0, "Heavy-ball momentum (sgd, nsgd).", minimum=0)
  nesterov: bool = setting(False, "Nesterov momentum (sgd, nsgd).")
  lr_schedule: str = setting("constant",
      "constant, or step (multiply by --lr_decay_factor at --lr_boundaries).",
      choices=SCHEDULES)
  lr_boundaries: tuple = setting((), "Steps at which a step schedule decays, e.g. 1000,2000.",
                                  items=int)
  lr_decay_factor: float = setting(0.1, "Factor of the step schedule.")
  batch_size: int = setting(128,
      "Minibatch size; 0 = full-batch gradient descent.",
      minimum=0)
  steps: int = setting(1000, "Number of optimizer steps.", minimum=1, mutable_on_resume=True)
  target_train_loss: float = setting(0.0,
      "Stop early at the first evaluation whose training loss is at or below this (0 = "
      "never): compares runs at equal loss.", mutable_on_resume=True)
  nsgd_gamma: float = setting(1.0,
      "NSGD: learning-rate factor along the top-K directions.",
      minimum=0)
  nsgd_top_k: int = setting(5, "NSGD: number K of directions.", minimum=1)
  nsgd_complement: float = setting(1.0,
      "NSGD: factor in the orthogonal complement.",
      minimum=0)
  nsgd_refresh_every: int = setting(0,
      "NSGD: recompute the directions every N steps (0 = at every spectrum "
      "measurement).",
      minimum=0)
  sam_rho: float = setting(0.0,
      "SAM (Foret et al. 2021) on top of --optimizer: the update uses the gradient at w "
      "+ rho g/||g|| (0 = off; the paper: 0.05).",
      minimum=0)
  sam_adaptive: bool = setting(False,
      "ASAM (Kwon et al. 2021): the ball scaled by |w| + 0.01 (try --sam_rho=0.5 or "
      "more).")
  # curvature
  spectrum_every: int = setting(100,
      "Measure the top eigenvalues every N steps (0 = never).",
      minimum=0)
  spectrum_k: int = setting(5, "Number of top eigenvalues measured.", minimum=1)
  spectrum_iters: int = setting(100, "Most Lanczos iterations per measurement.", minimum=1)
  spectrum_tol: float = setting(1e-3, "Relative Ritz residual tolerance of a measurement.")
  hessian_method: str = setting("forward_over_reverse",
      "Hessian-vector products: forward_over_reverse, reverse_over_reverse or "
      "finite_difference (an exact method that cannot differentiate the model falls "
      "back to the next, logged and recorded).",
      choices=hvp_lib.METHODS)
  hessian_fraction: float = setting(0.05,
      "Fraction of the training set the Hessian is measured on.")
  hessian_size: int = setting(0,
      "Size of the Hessian subset (overrides --hessian_fraction).",
      minimum=0)
  hessian_resample: bool = setting(False, "Redraw the Hessian subset at every measurement.")
  hessian_batch_size: int = setting(512, "Chunk size of the Hessian passes.", minimum=1)
  spectrum_warm_start: bool = setting(True,
      "Start each measurement's Lanczos from the previous eigenvectors.")
  spectrum_repeats: int = setting(1,
      "Measurements on this many Hessian subsets (spread = error bars).",
      minimum=1)
  spectrum_blocks: str = setting("",
      "Per-layer spectra with each top-k measurement: 'layer' (every layer with "
      "weights) or a regular expression over layer names; the top-k of each diagonal "
      "Hessian block and each top eigenvector's mass per layer ('' = off).")
  directional_every: int = setting(0,
      "Curvature along the gradient and along the update, and the critical sharpness "
      "along the update, on the Hessian data every N steps (0 = never; "
      "tf_sharpness.directional).",
      minimum=0)
  directional_quantities: tuple = setting(
      directional_lib.QUANTITIES[:3],
      "What --directional_every measures: gradient, update, critical_update (cheap), "
      "batch (batch sharpness over the --landscape_minibatches training batches), "
      "self_stabilization (grad lambda_1 and its cosine with the loss gradient).",
      items=str, item_choices=directional_lib.QUANTITIES)
  lambda_interval_every: int = setting(0,
      "An interval for the full-data lambda_max from the Hessian data every N steps "
      "(0 = never; tf_sharpness.subsample: cross-fitted lower bound, bootstrap upper "
      "bound, 1/n bias correction).",
      minimum=0)
  lambda_interval_batches: int = setting(16,
      "Disjoint batches the Hessian data is split into for --lambda_interval_every "
      "(even, >= 4; at most the Hessian examples).",
      minimum=4)
  lambda_interval_confidence: float = setting(0.9,
      "Two-sided confidence of --lambda_interval_every's interval, in (0, 1).")
  sharpness_every: int = setting(0,
      "Sharpness measures every N steps (0 = never).",
      minimum=0)
  sharpness_measures: tuple = setting(("worst_l2", "avg", "adaptive_l2"),
      "Which: worst_l2, worst_linf, adaptive_l2, adaptive_linf (worst case over a ball, "
      "ascent lower bounds), avg, adaptive_avg (Gaussian average case), keskar, "
      "trace_h2 (tr H^2).", items=str, item_choices=tuple(sorted(sharpness_lib.MEASURES)))
  sharpness_rho: float = setting(0.05,
      "Worst-case radius rho (linf: rho / sqrt(#parameters)).")
  sharpness_sigma: float = setting(0.01, "Average-case noise scale sigma.")
  sharpness_steps: int = setting(10, "Ascent steps of the worst-case measures.", minimum=1)
  sharpness_samples: int = setting(10, "Samples of the Monte-Carlo measures.", minimum=1)
  smallest_every: int = setting(0,
      "The algebraically smallest eigenvalues every N steps (0 = never).",
      minimum=0)
  smallest_k: int = setting(1, "Number of smallest eigenvalues measured.", minimum=1)
  density_every: int = setting(0,
      "SLQ spectral density every N steps (0 = never).",
      minimum=0)
  density_runs: int = setting(5, "SLQ random starts.", minimum=1)
  density_iters: int = setting(60, "SLQ Lanczos steps per start.", minimum=1)
  trace_every: int = setting(0, "Hutchinson trace every N steps (0 = never).", minimum=0)
  trace_samples: int = setting(20, "Hutchinson probes.", minimum=1)
  trace_method: str = setting("hutchpp",
      "Trace estimator: hutchpp (lower variance) or hutchinson.",
      choices=("hutchpp", "hutchinson"))
  # landscape probes
  slice_every: int = setting(0,
      "Loss slices along the top eigenvectors every N steps (0 = never).")
  slice_directions: tuple = setting((1, 3, 5),
      "Eigenvector indices (1 = top) for slices and step analysis.", items=int)
  slice_alphas: tuple = setting((-16, -8, -4, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 2, 4, 8, 16),
      "Slice points, in units of the SGD step length along each direction.", items=float)
  slice_2d_every: int = setting(0,
      "2-D surfaces (top-2 eigenvectors; filter-normalized random) every N steps.")
  slice_2d_points: int = setting(11, "Grid points per axis of the 2-D surfaces.")
  step_analysis_every: int = setting(0, "Step-length analysis every N steps (0 = never).")
  step_factors: tuple = setting((0.25, 0.33, 0.5, 1, 2, 3, 4),
      "Step-length factors eta'/eta of the step analysis.", items=float)
  walk_steps: str = setting("",
      "START:END steps over which to interpolate the loss between iterates; several "
      "windows comma-separated (e.g. 100:160,1500:1560: early and late in one run).")
  walk_points: int = setting(10, "Points of each interpolation between iterates.")
  landscape_size: int = setting(1280,
      "Training examples the probes evaluate the loss on (the first N in --train_order).")
  landscape_minibatches: int = setting(10,
      "Minibatches M averaged by the step length and step analysis.")
  # bookkeeping
  eval_every: int = setting(100,
      "Train/test loss and accuracy every N steps (0 = never).",
      minimum=0, mutable_on_resume=True)
  eval_size: int = setting(2000,
      "Training examples of the train-set evaluation (the first N in --train_order).",
      minimum=1, mutable_on_resume=True)
  log_every: int = setting(10, "Log loss, gradient norm, step norm every N steps.", minimum=1, mutable_on_resume=True)
  checkpoint_every: int = setting(0, "Checkpoint every N steps (0 = never).", minimum=0, mutable_on_resume=True)
  resume: bool = setting(False,
      "Continue the run in --logdir from its latest checkpoint; refused if the "
      "checkpoint was made with other settings (except the flags marked 'may change on "
      "--resume').", mutable_on_resume=True)
  overwrite: bool = setting(False,
      "Delete the run already in --logdir (events, metrics.jsonl, flags.txt, "
      "checkpoints) and start over.", mutable_on_resume=True)
  strategy: str = setting("default",
      "tf.distribute strategy: default, mirrored or multi_worker (reads TF_CONFIG).",
      choices=STRATEGIES, mutable_on_resume=True)
  deterministic: bool = setting(False, "Enable TensorFlow op determinism.", mutable_on_resume=True)

  def validate(self) -> None:
    """Raises ValueError naming the flag and what is allowed."""
    check_fields(self)
    if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
      raise ConfigError(f"`learning_rate` must be > 0, got {self.learning_rate}")
    if self.momentum > 1:
      raise ConfigError(f"`momentum` must be in [0, 1], got {self.momentum}")
    if not 0 < self.hessian_fraction <= 1:
      raise ConfigError(f"`hessian_fraction` must be in (0, 1], got "
                       f"{self.hessian_fraction}")
    if not self.spectrum_tol > 0:
      raise ConfigError(f"`spectrum_tol` must be > 0, got {self.spectrum_tol}")
    if self.lr_schedule == "step" and not self.lr_boundaries:
      raise ConfigError("`lr_schedule=step` needs `lr_boundaries` (steps at "
                       "which the learning rate is multiplied by "
                       "`lr_decay_factor`)")
    if list(self.lr_boundaries) != sorted(set(int(b) for b in self.lr_boundaries)):
      raise ConfigError(f"`lr_boundaries` must be increasing integers, got "
                       f"{list(self.lr_boundaries)}")
    if self.optimizer == "nsgd" and self.nsgd_refresh_every == 0 and not self.spectrum_every:
      raise ConfigError("`optimizer=nsgd` needs `nsgd_refresh_every` > 0 or "
                       "`spectrum_every` > 0 to get its directions")
    if self.target_train_loss < 0 or not math.isfinite(self.target_train_loss):
      raise ConfigError(f"`target_train_loss` must be >= 0, got {self.target_train_loss}")
    if self.target_train_loss and not self.eval_every:
      raise ConfigError("`target_train_loss` needs `eval_every` > 0 (the training loss "
                        "is measured at the evaluations)")
    if self.sam_adaptive and not self.sam_rho:
      raise ConfigError("`sam_adaptive` needs `sam_rho` > 0")
    if self.nesterov and self.momentum == 0:
      raise ConfigError("`nesterov` needs `momentum` > 0")
    for name in ("slice_every", "slice_2d_every", "step_analysis_every"):
      if getattr(self, name) < 0:
        raise ConfigError(f"`{name}` must be >= 0, got {getattr(self, name)}")
    for name in ("landscape_size", "landscape_minibatches"):
      if getattr(self, name) < 1:
        raise ConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}")
    for name in ("spectrum_k", "nsgd_top_k", "smallest_k"):
      if getattr(self, name) > self.spectrum_iters:
        raise ConfigError(f"`{name}={getattr(self, name)}` needs at least as many "
                          f"Lanczos steps: `spectrum_iters={self.spectrum_iters}` "
                          f"must be >= {getattr(self, name)}")
    if self.slice_2d_points < 3 or self.walk_points < 3:
      raise ConfigError("`slice_2d_points` and `walk_points` must be >= 3")
    if any(int(d) < 1 for d in self.slice_directions) or not self.slice_directions:
      raise ConfigError("`slice_directions` must be eigenvector indices >= 1 "
                       f"(1 = the top one), got {list(self.slice_directions)}")
    if not self.slice_alphas or not self.step_factors:
      raise ConfigError("`slice_alphas` and `step_factors` must not be empty")
    probe_k = max(int(d) for d in self.slice_directions)
    if (self.slice_every or self.step_analysis_every) and probe_k > self.spectrum_iters:
      raise ConfigError(f"`slice_directions` up to e{probe_k} need `spectrum_iters` "
                        f">= {probe_k}, got {self.spectrum_iters}")
    self.walk_window()  # validates --walk_steps
    if not self.sharpness_measures:
      raise ConfigError(f"`sharpness_measures` must be a list of "
                        f"{sorted(sharpness_lib.MEASURES)}, got []")
    if self.lambda_interval_batches % 2:
      raise ConfigError(f"`lambda_interval_batches` must be even (two halves), got "
                        f"{self.lambda_interval_batches}")
    if not 0 < self.lambda_interval_confidence < 1:
      raise ConfigError(f"`lambda_interval_confidence` must be in (0, 1), got "
                        f"{self.lambda_interval_confidence}")
    for name in ("sharpness_rho", "sharpness_sigma"):
      if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
        raise ConfigError(f"`{name}` must be > 0, got {getattr(self, name)}")
    if self.spectrum_blocks:
      try:
        re.compile(self.spectrum_blocks)
      except re.error as e:
        raise ConfigError(f"`spectrum_blocks` must be 'layer' or a regular expression "
                          f"over layer names, got {self.spectrum_blocks!r} ({e})") from None
      if not self.spectrum_every:
        raise ConfigError("`spectrum_blocks` needs `spectrum_every` > 0 (the blocks are "
                          "measured with the top eigenvalues)")

  def to_json(self) -> dict:
    return settings_json(self)

  @staticmethod
  def checkpoint_defaults() -> dict:
    """The values of the settings a checkpoint does not record: today's
    defaults, except where runs made before a setting existed did
    otherwise (``PREDATES``)."""
    return {**Config().to_json(), **PREDATES}

  def walk_window(self) -> "StepWindows":
    """--walk_steps=START:END[,START:END...] as ``StepWindows`` ('' = none)."""
    windows = []
    for text in filter(None, self.walk_steps.split(",")):
      try:
        start, end = (int(v) for v in text.split(":"))
      except ValueError:
        raise ConfigError(f"`walk_steps` must be START:END (integers), comma-separated, "
                          f"got {self.walk_steps!r}") from None
      if not 0 <= start < end:
        raise ConfigError(f"`walk_steps` needs 0 <= START < END, got {self.walk_steps!r}")
      if windows and start <= windows[-1].stop:  # apart: no step pairs across two
        raise ConfigError(f"`walk_steps` windows must be increasing and apart (each "
                          f"START after the previous END), got {self.walk_steps!r}")
      windows.append(range(start, end))
    return StepWindows(tuple(windows))


@dataclasses.dataclass(frozen=True)
class StepWindows:
  """Steps in any of ``ranges`` (increasing, disjoint): ``step in w``;
  ``stop`` is the last range's end (0 for none)."""
  ranges: tuple = ()

  def __contains__(self, step) -> bool:
    return any(step in r for r in self.ranges)

  def __len__(self) -> int:
    return sum(len(r) for r in self.ranges)

  def __iter__(self):
    for r in self.ranges:
      yield from r

  @property
  def stop(self) -> int:
    return self.ranges[-1].stop if self.ranges else 0

  def index(self, step: int) -> int | None:
    """Which window ``step`` is in (None: none)."""
    return next((i for i, r in enumerate(self.ranges) if step in r), None)


# Fields that may differ between a run and its --resume (``setting(...,
# mutable_on_resume=True)``).
MUTABLE_ON_RESUME = frozenset(f.name for f in dataclasses.fields(Config)
                              if f.metadata["mutable_on_resume"])


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
