"""absl flags for every ``config_lib.Config`` field, with help texts.

``define_flags()`` declares them (enums for the fields with fixed choices,
so absl itself rejects bad values naming the flag); ``config_from_flags()``
builds the validated ``Config``.  ``define_list`` declares the
comma-separated flags of the report scripts (windows A:B, loss levels,
steps), parsed and checked by absl in the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import flags

from tf_sharpness import data as data_lib
from tf_sharpness import losses as losses_lib
from tf_sharpness import models as models_lib
from tf_sharpness import config as config_lib
from tf_sharpness import hvp as hvp_lib
from tf_sharpness import trajectory
from tf_sharpness.errors import ConfigError

HELP = {
    "logdir": "Output folder: event files, metrics.jsonl, flags.txt, checkpoints.",
    "seed": "Seed of initialization, data order, subsets and Lanczos.",
    "dataset": "cifar10_mini (embedded, offline), a tfds name, or a path to an "
               "image folder / .tar.gz laid out as ROOT/{train,test}/<class>/*.jpg.",
    "data_dir": "tensorflow-datasets data_dir.",
    "train_size": "Seeded class-balanced training subset size (0 = all).",
    "validation_size": "Examples held out of training as a validation split.",
    "standardize": "Input standardization with training-split statistics.",
    "augment": "Random 4-pixel shifts and horizontal flips.",
    "model": "Model name.",
    "filters": "simple_cnn: filters F.",
    "kernel_size": "simple_cnn: kernel size.",
    "depth": "fcn/cnn: number of hidden layers.",
    "width": "fcn/cnn: units or channels per layer.",
    "activation": "fcn/cnn: activation.",
    "parameterization": "fcn: standard or NTK parameterization.",
    "normalization": "resnet32: batchnorm or none.",
    "init_scale": "resnet32: factor on the He-normal variance 2/fan_in (paper: 1/15 without BN).",
    "loss": "xent (softmax cross-entropy) or mse (0.5 ||f - onehot||^2).",
    "optimizer": "Optimizer.",
    "learning_rate": "Learning rate eta.",
    "momentum": "Heavy-ball momentum (sgd, nsgd).",
    "nesterov": "Nesterov momentum (sgd, nsgd).",
    "lr_schedule": "constant, or step (multiply by --lr_decay_factor at --lr_boundaries).",
    "lr_boundaries": "Steps at which a step schedule decays, e.g. 1000,2000.",
    "lr_decay_factor": "Factor of the step schedule.",
    "batch_size": "Minibatch size; 0 = full-batch gradient descent.",
    "steps": "Number of optimizer steps.",
    "target_train_loss": "Stop early at the first evaluation whose training loss is at "
                         "or below this (0 = never): compares runs at equal loss.",
    "nsgd_gamma": "NSGD: learning-rate factor along the top-K directions.",
    "nsgd_top_k": "NSGD: number K of directions.",
    "nsgd_complement": "NSGD: factor in the orthogonal complement.",
    "nsgd_refresh_every": "NSGD: recompute the directions every N steps "
                          "(0 = at every spectrum measurement).",
    "sam_rho": "SAM (Foret et al. 2021) on top of --optimizer: the update uses the "
               "gradient at w + rho g/||g|| (0 = off; the paper: 0.05).",
    "sam_adaptive": "ASAM (Kwon et al. 2021): the ball scaled by |w| + 0.01 (try "
                    "--sam_rho=0.5 or more).",
    "spectrum_every": "Measure the top eigenvalues every N steps (0 = never).",
    "spectrum_k": "Number of top eigenvalues measured.",
    "spectrum_iters": "Most Lanczos iterations per measurement.",
    "spectrum_tol": "Relative Ritz residual tolerance of a measurement.",
    "hessian_method": "Hessian-vector products: forward_over_reverse, reverse_over_reverse or "
                      "finite_difference (an exact method that cannot differentiate the "
                      "model falls back to the next, logged and recorded).",
    "hessian_fraction": "Fraction of the training set the Hessian is measured on.",
    "hessian_size": "Size of the Hessian subset (overrides --hessian_fraction).",
    "hessian_resample": "Redraw the Hessian subset at every measurement.",
    "hessian_batch_size": "Chunk size of the Hessian passes.",
    "spectrum_warm_start": "Start each measurement's Lanczos from the previous eigenvectors.",
    "spectrum_repeats": "Measurements on this many Hessian subsets (spread = error bars).",
    "sharpness_every": "Sharpness measures every N steps (0 = never).",
    "sharpness_measures": "Which: worst_l2, worst_linf, adaptive_l2, adaptive_linf "
                          "(worst case over a ball, ascent lower bounds), avg, adaptive_avg "
                          "(Gaussian average case), keskar, trace_h2 (tr H^2).",
    "sharpness_rho": "Worst-case radius rho (linf: rho / sqrt(#parameters)).",
    "sharpness_sigma": "Average-case noise scale sigma.",
    "sharpness_steps": "Ascent steps of the worst-case measures.",
    "sharpness_samples": "Samples of the Monte-Carlo measures.",
    "spectrum_blocks": "Per-layer spectra with each top-k measurement: 'layer' (every "
                       "layer with weights) or a regular expression over layer names; "
                       "the top-k of each diagonal Hessian block and each top "
                       "eigenvector's mass per layer ('' = off).",
    "smallest_every": "The algebraically smallest eigenvalues every N steps (0 = never).",
    "smallest_k": "Number of smallest eigenvalues measured.",
    "trace_method": "Trace estimator: hutchpp (lower variance) or hutchinson.",
    "density_every": "SLQ spectral density every N steps (0 = never).",
    "density_runs": "SLQ random starts.",
    "density_iters": "SLQ Lanczos steps per start.",
    "trace_every": "Hutchinson trace every N steps (0 = never).",
    "trace_samples": "Hutchinson probes.",
    "slice_every": "Loss slices along the top eigenvectors every N steps (0 = never).",
    "slice_directions": "Eigenvector indices (1 = top) for slices and step analysis.",
    "slice_alphas": "Slice points, in units of the SGD step length along each direction.",
    "slice_2d_every": "2-D surfaces (top-2 eigenvectors; filter-normalized random) every N steps.",
    "slice_2d_points": "Grid points per axis of the 2-D surfaces.",
    "step_analysis_every": "Step-length analysis every N steps (0 = never).",
    "step_factors": "Step-length factors eta'/eta of the step analysis.",
    "walk_steps": "START:END steps over which to interpolate the loss between iterates.",
    "walk_points": "Points of each interpolation between iterates.",
    "landscape_size": "Training examples the probes evaluate the loss on (the first N).",
    "landscape_minibatches": "Minibatches M averaged by the step length and step analysis.",
    "eval_every": "Train/test loss and accuracy every N steps (0 = never).",
    "eval_size": "Training examples used for the train-set evaluation.",
    "log_every": "Log loss, gradient norm, step norm every N steps.",
    "checkpoint_every": "Checkpoint every N steps (0 = never).",
    "resume": "Continue the run in --logdir from its latest checkpoint; refused if the "
              "checkpoint was made with other settings (except the flags marked "
              "'may change on --resume').",
    "overwrite": "Delete the run already in --logdir (events, metrics.jsonl, flags.txt, "
                 "checkpoints) and start over.",
    "strategy": "tf.distribute strategy: default, mirrored or multi_worker (reads TF_CONFIG).",
    "deterministic": "Enable TensorFlow op determinism.",
}

ENUMS = {
    "standardize": data_lib.STANDARDIZE,
    "model": tuple(sorted(models_lib.MODELS)),
    "parameterization": models_lib.PARAMETERIZATIONS,
    "normalization": ("batchnorm", "none"),
    "loss": losses_lib.LOSSES,
    "optimizer": config_lib.OPTIMIZERS,
    "lr_schedule": config_lib.SCHEDULES,
    "hessian_method": hvp_lib.METHODS,
    "strategy": config_lib.STRATEGIES,
    "trace_method": ("hutchpp", "hutchinson"),
}


def define_flags(flag_values=flags.FLAGS) -> None:
  for field in dataclasses.fields(config_lib.Config):
    name, default = field.name, field.default
    help_text = HELP[name]
    if name in config_lib.MUTABLE_ON_RESUME - {"resume", "overwrite"}:
      help_text += " (may change on --resume)"
    if name in ENUMS:
      flags.DEFINE_enum(name, default, list(ENUMS[name]), help_text,
                        flag_values=flag_values)
    elif isinstance(default, bool):
      flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
    elif isinstance(default, int):
      flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
    elif isinstance(default, float):
      flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
    elif isinstance(default, tuple):
      flags.DEFINE_list(name, [str(v) for v in default], help_text,
                        flag_values=flag_values)
    else:
      flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


class _ItemsParser(flags.ArgumentParser):
  """A comma-separated flag whose items ``convert`` turns into its value;
  ``convert`` raises ValueError saying what is allowed, which absl reports
  with the flag's name and value."""

  def __init__(self, convert):
    self.convert = convert

  def parse(self, argument):
    if isinstance(argument, list) and not all(isinstance(v, str) for v in argument):
      return argument  # already parsed (a default, or a value set in code)
    items = argument if isinstance(argument, list) else argument.split(",")
    return self.convert([v.strip() for v in items if v.strip()])

  def flag_type(self):
    return "comma-separated list"


class _ItemsSerializer(flags.ArgumentSerializer):
  """Writes a parsed value back as the flag's text (windows as A:B)."""

  def serialize(self, value):
    return ",".join(":".join(f"{x:g}" for x in v) if isinstance(v, tuple) else f"{v:g}"
                    for v in value)


def _steps(specs: list[str]) -> list[int]:
  try:
    steps = [int(s) for s in specs]
  except ValueError:
    steps = [-1]
  if any(s < 0 for s in steps):
    raise ValueError("whole steps >= 0, e.g. 100,2000")
  return steps


LIST_KINDS = {"windows": trajectory.parse_windows,  # "A:B,C:D" -> [(A, B), (C, D)]
              "loss_levels": trajectory.parse_levels,  # strictly decreasing numbers
              "steps": _steps}


def json_from_flag(name: str, path: str):
  """The JSON at ``path``, given as --name; a usage error naming the flag
  when it cannot be read."""
  from absl import app  # pylint: disable=g-import-not-at-top
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise app.UsageError(f"--{name}={path}: cannot read it as JSON ({e})") from None


def define_list(kind: str, name: str, help_text: str, flag_values=flags.FLAGS) -> None:
  """A report flag of one of the ``LIST_KINDS``, empty by default."""
  flags.DEFINE(_ItemsParser(LIST_KINDS[kind]), name, [], help_text, flag_values,
               serializer=_ItemsSerializer())


def config_from_flags(flag_values=flags.FLAGS) -> config_lib.Config:
  values = {}
  for field in dataclasses.fields(config_lib.Config):
    value = flag_values[field.name].value
    if field.name in ("lr_boundaries", "slice_directions"):
      try:
        value = tuple(int(v) for v in value)
      except ValueError as e:
        raise ConfigError(f"--{field.name} must be integers, got {value}") from e
    elif field.name == "sharpness_measures":
      value = tuple(value)
    elif field.name in ("slice_alphas", "step_factors"):
      try:
        value = tuple(float(v) for v in value)
      except ValueError as e:
        raise ConfigError(f"--{field.name} must be numbers, got {value}") from e
    values[field.name] = value
  cfg = config_lib.Config(**values)
  cfg.validate()
  return cfg


flagfile_text = config_lib.flagfile_text

# The flagfiles of README and docs (scripts/flags in a source checkout).
FLAGFILES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "flags")


def config_from_flagfile(path: str) -> config_lib.Config:
  """The validated ``Config`` of a flagfile, parsed by the flags train.py has."""
  fv = flags.FlagValues()
  define_flags(fv)
  fv(["config_from_flagfile", f"--flagfile={path}"])
  return config_from_flags(fv)


def define_settings_flags(settings_cls, flag_values=flags.FLAGS) -> None:
  """One flag per field of an experiment's frozen ``Settings`` dataclass,
  typed by its default (str, bool, int, float, or a tuple of ints / floats
  as a comma-separated list), its help from the field's ``help`` metadata."""
  for field in dataclasses.fields(settings_cls):
    name, default = field.name, field.default
    help_text = field.metadata.get("help", name)
    if isinstance(default, bool):
      flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
    elif isinstance(default, int):
      flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
    elif isinstance(default, float):
      flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
    elif isinstance(default, tuple):
      kind = _item_type(field)
      flags.DEFINE(_ItemsParser(lambda items, kind=kind, name=name:
                                _items_of(kind, name, items)),
                   name, list(default), help_text, flag_values,
                   serializer=_ItemsSerializer())
    else:
      flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def _item_type(field) -> type:
  kind = field.metadata.get("items")
  if kind is None:
    raise TypeError(f"Settings field {field.name}: a tuple field needs metadata "
                    "items=int or items=float")
  return kind


def _items_of(kind: type, name: str, items: list[str]) -> tuple:
  try:
    return tuple(kind(v) for v in items)
  except ValueError:
    raise ValueError(f"{kind.__name__} values, e.g. "
                     f"{'0,1,2' if kind is int else '0.1,0.01'}") from None


def settings_from_flags(settings_cls, flag_values=flags.FLAGS):
  """The ``Settings`` of the parsed flags; its validation errors name the flag."""
  values = {f.name: flag_values[f.name].value for f in dataclasses.fields(settings_cls)}
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  try:
    return settings_cls(**values)
  except ValueError as e:
    raise ConfigError(f"--{e}") from None


def run(main, module: str) -> None:
  """``absl.app.run(main)`` for the subcommand defined in ``module``, with
  ``--help`` listing that module's flags (absl lists the main module's)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  sys.modules["__main__"].__doc__ = sys.modules[module].__doc__  # absl's --help text
  for flag in flags.FLAGS.get_key_flags_for_module(module):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)
