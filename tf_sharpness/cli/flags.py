"""absl flags for every ``config_lib.Config`` field (help and choices\nfrom the field's metadata: each setting is declared once, in config.py).

``define_flags()`` declares them (enums for the fields with fixed choices,
so absl itself rejects bad values naming the flag); ``config_from_flags()``
builds the validated ``Config``.  ``define_list`` declares the
comma-separated flags of the report scripts (windows A:B, loss levels,
steps), parsed and checked by absl in the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys

from absl import flags

from tf_sharpness import config as config_lib
from tf_sharpness.reports import trajectory
from tf_sharpness.errors import ConfigError

def define_flags(flag_values=flags.FLAGS) -> None:
  """One flag per ``Config`` field, from the field's default, help and
  choices (an enum flag: absl itself rejects other values, naming the
  flag); ``Config.validate`` checks the bounds."""
  for field in dataclasses.fields(config_lib.Config):
    help_text = field.metadata["help"]
    if field.metadata["mutable_on_resume"] and field.name not in ("resume", "overwrite"):
      help_text += " (may change on --resume)"
    _define_field(field, field.default, help_text, {}, flag_values)
  _key_flags_of_caller([f.name for f in dataclasses.fields(config_lib.Config)], flag_values)


def define_config_flags(flag_values=flags.FLAGS, *, lower_bounds=None, **defaults) -> None:
  """The flags of the named ``Config`` fields for an experiment driver, with
  the driver's own defaults (``...`` keeps Config's): help, choices and
  lower bound come from the field, so a driver never re-declares them.
  ``lower_bounds`` raises a field's bound where a driver needs more (e.g.
  no full batch, ``batch_size=0``, in a driver that draws minibatches)."""
  fields = {f.name: f for f in dataclasses.fields(config_lib.Config)}
  lower_bounds = lower_bounds or {}
  unknown = set(lower_bounds) - set(defaults)
  if unknown:
    raise ValueError(f"lower_bounds for flags not defined here: {sorted(unknown)}")
  for name, default in defaults.items():
    field = fields[name]
    minimum = lower_bounds.get(name, field.metadata["minimum"])
    help_text = field.metadata["help"]
    if name in lower_bounds:
      help_text += f" (here >= {minimum})"
    _define_field(field, field.default if default is ... else default, help_text,
                  {} if minimum is None else {"lower_bound": minimum}, flag_values)
  _key_flags_of_caller(defaults, flag_values)


def _key_flags_of_caller(names, flag_values) -> None:
  """Lists flags defined here among the key flags of the module that asked
  for them (its --help shows them)."""
  caller = sys._getframe(2).f_globals["__name__"]  # pylint: disable=protected-access
  for name in names:
    flag_values.register_key_flag_for_module(caller, flag_values[name])


def _define_field(field, default, help_text: str, bound: dict, flag_values) -> None:
  name, choices = field.name, field.metadata.get("choices")
  if choices is not None:
    flags.DEFINE_enum(name, default, list(choices), help_text, flag_values=flag_values)
  elif isinstance(default, bool):
    flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
  elif isinstance(default, int):
    flags.DEFINE_integer(name, default, help_text, flag_values=flag_values, **bound)
  elif isinstance(default, float):
    flags.DEFINE_float(name, default, help_text, flag_values=flag_values, **bound)
  elif isinstance(default, tuple):
    kind = field.metadata.get("items") or _item_type(field)
    flags.DEFINE(_ItemsParser(lambda items, kind=kind: _items_of(kind, items)),
                 name, list(default), help_text, flag_values,
                 serializer=_ItemsSerializer())
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
    one = lambda x: x if isinstance(x, str) else f"{x:g}"
    return ",".join(":".join(one(x) for x in v) if isinstance(v, tuple) else one(v)
                    for v in value)


def _steps(specs: list[str]) -> list[int]:
  try:
    steps = [int(s) for s in specs]
  except ValueError:
    steps = [-1]
  if any(s < 0 for s in steps):
    raise ValueError("whole steps >= 0, e.g. 100,2000")
  return steps


def _positive_numbers(specs: list[str]) -> list[float]:
  try:
    values = [float(s) for s in specs]
  except ValueError:
    values = [-1.0]
  if not all(math.isfinite(v) and v > 0 for v in values):
    raise ValueError("numbers > 0, e.g. 0.1,5")
  return values


LIST_KINDS = {"windows": trajectory.parse_windows,  # "A:B,C:D" -> [(A, B), (C, D)]
              "loss_levels": trajectory.parse_levels,  # strictly decreasing numbers
              "steps": _steps,
              "positive_numbers": _positive_numbers}


def as_flags(message: str, flag_values=flags.FLAGS) -> str:
  """A library error's message in the command line's words: the library
  names a setting as `name` or `name=value`; a defined flag becomes
  --name(=value)."""
  names = set(flag_values)
  return re.sub(r"`([a-z][a-z0-9_]*)(=[^`]*)?`",
                lambda m: f"--{m.group(1)}{m.group(2) or ''}" if m.group(1) in names
                else m.group(0), message)


def json_from_flag(name: str, path: str):
  """The JSON at ``path``, given as --name; a usage error naming the flag
  when it cannot be read."""
  from absl import app  # pylint: disable=g-import-not-at-top
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise app.UsageError(f"--{name}={path}: cannot read it as JSON ({e})") from None


def define_list(kind: str, name: str, help_text: str, flag_values=flags.FLAGS,
                default: list | None = None) -> None:
  """A flag of one of the ``LIST_KINDS``, empty by default."""
  flags.DEFINE(_ItemsParser(LIST_KINDS[kind]), name, list(default or []), help_text,
               flag_values, serializer=_ItemsSerializer())


def config_from_flags(flag_values=flags.FLAGS) -> config_lib.Config:
  values = {f.name: flag_values[f.name].value for f in dataclasses.fields(config_lib.Config)}
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  cfg = config_lib.Config(**values)
  try:
    cfg.validate()
  except ConfigError as e:
    raise ConfigError(as_flags(str(e), flag_values)) from None
  return cfg


flagfile_text = config_lib.flagfile_text

# The flagfiles of README and docs, shipped with the package (a source
# checkout links scripts/flags here).
FLAGFILES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "flagfiles")


def shipped_flagfile(name: str) -> str | None:
  """The path of the shipped flagfile ``name`` (``quick`` or ``quick.cfg``),
  None if there is none of that name."""
  base = name if name.endswith(".cfg") else name + ".cfg"
  path = os.path.join(FLAGFILES, base)
  return path if os.sep not in name and os.path.isfile(path) else None


def with_shipped_flagfiles(argv: list[str]) -> list[str]:
  """``--flagfile=NAME`` naming no file here but a shipped flagfile
  (``--flagfile=quick``) becomes that flagfile's path, so that any install
  runs the README's jobs."""
  out = []
  for arg in argv:
    if arg.startswith("--flagfile="):
      value = arg.split("=", 1)[1]
      shipped = None if os.path.exists(value) else shipped_flagfile(value)
      arg = f"--flagfile={shipped}" if shipped else arg
    out.append(arg)
  return out


def config_from_flagfile(path: str) -> config_lib.Config:
  """The validated ``Config`` of a flagfile, parsed by the flags train.py has."""
  fv = flags.FlagValues()
  define_flags(fv)
  fv(["config_from_flagfile", f"--flagfile={path}"])
  return config_from_flags(fv)


def shipped_config(name: str) -> config_lib.Config:
  """The ``Config`` of the shipped flagfile ``name`` (``eos`` or ``eos.cfg``),
  the base of the experiments that run it."""
  path = shipped_flagfile(name)
  if path is None:
    raise ValueError(f"no shipped flagfile {name!r} in {FLAGFILES}")
  return config_from_flagfile(path)


def define_settings_flags(settings_cls, flag_values=flags.FLAGS) -> None:
  """One flag per field of an experiment's frozen ``Settings`` dataclass,
  from the field's ``setting()`` (or ``config.like()``) metadata: help,
  choices (an enum flag), lower bound and tuple item type, as for
  ``Config``; ``settings_from_flags`` then checks the rest."""
  for field in dataclasses.fields(settings_cls):
    minimum = field.metadata.get("minimum")
    help_text = field.metadata.get("help", field.name)
    _define_field(field, field.default, help_text,
                  {} if minimum is None else {"lower_bound": minimum}, flag_values)
  _key_flags_of_caller([f.name for f in dataclasses.fields(settings_cls)], flag_values)


def _item_type(field) -> type:
  kind = field.metadata.get("items")
  if kind is None:
    raise TypeError(f"Settings field {field.name}: a tuple field needs metadata "
                    "items=int or items=float")
  return kind


def _items_of(kind: type, items: list[str]) -> tuple:
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
    raise ConfigError(as_flags(str(e), flag_values)) from None


def run(main, module: str) -> None:
  """``absl.app.run(main)`` for the subcommand defined in ``module``, with
  ``--help`` listing that module's flags (absl lists the main module's)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  sys.modules["__main__"].__doc__ = sys.modules[module].__doc__  # absl's --help text
  for flag in flags.FLAGS.get_key_flags_for_module(module):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  sys.argv = with_shipped_flagfiles(sys.argv)
  app.run(_in_flags(main))


def _in_flags(main):
  """``main`` with the library's errors on settings, data and run folders
  told in one line naming the flags (``error: ...``, exit status 1), as
  ``tf-sharpness train`` does; what was written so far stays on disk."""
  from tf_sharpness import rundir  # pylint: disable=g-import-not-at-top
  from tf_sharpness.data import DatasetError  # pylint: disable=g-import-not-at-top

  def wrapped(argv):
    try:
      return main(argv)
    except (ConfigError, DatasetError, rundir.RunDirError) as e:
      print(f"error: {as_flags(str(e))}", file=sys.stderr)
      return 1
  return wrapped
