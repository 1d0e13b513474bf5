"""Declared once: every experiment's Settings field carries its help,
bounds and item types (config.setting / config.like), a field named like a
Config setting shares its choices instead of copying them, and the flags
are generated from the fields."""

import dataclasses
import importlib
import pkgutil
import re

import pytest
from absl import flags

import tf_sharpness.experiments
from tf_sharpness import config as config_lib
from tf_sharpness.cli import flags as flags_lib
from tf_sharpness.experiments import nsgd_table, phase, step_length, walk

# every experiment's Settings, found (a new experiment is checked without
# being listed here)
SETTINGS = [m.Settings for m in (
    importlib.import_module(f"tf_sharpness.experiments.{info.name}")
    for info in pkgutil.iter_modules(tf_sharpness.experiments.__path__))
    if hasattr(m, "Settings")]
CONFIG = {f.name: f for f in dataclasses.fields(config_lib.Config)}


def test_every_experiment_settings_is_found():
  found = {cls.__module__.rsplit(".", 1)[-1] for cls in SETTINGS}
  assert found >= {"eos", "edge_quantities", "nsgd_table", "phase", "self_stabilization",
                   "step_length", "sweep", "walk"}, found


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__module__.rsplit(".", 1)[-1])
def test_every_field_is_declared_with_its_metadata(cls):
  fv = flags.FlagValues()
  flags_lib.define_settings_flags(cls, fv)
  for field in dataclasses.fields(cls):
    meta = field.metadata
    assert meta.get("help"), f"{cls.__qualname__}.{field.name} has no help"
    if isinstance(field.default, tuple):
      assert meta.get("items") in (int, float, str), field.name
    if field.name in CONFIG:  # the Config setting's choices, not a copy
      for key in ("choices", "item_choices"):
        assert meta.get(key) == CONFIG[field.name].metadata.get(key), (field.name, key)
    flag = fv[field.name]
    assert flag.help.endswith(meta["help"])
    if isinstance(field.default, tuple):
      assert list(flag.default) == list(field.default), field.name
    else:
      assert flag.default == field.default, field.name
  cls()  # the defaults are valid


def test_a_new_tuple_setting_must_say_its_item_type():
  with pytest.raises(TypeError, match="a tuple setting needs items="):
    config_lib.setting((1, 2), "no item type")


@pytest.mark.parametrize("cls", [c for c in SETTINGS if "seeds" in {
    f.name for f in dataclasses.fields(c)}], ids=lambda c: c.__module__.rsplit(".", 1)[-1])
def test_every_experiment_refuses_repeated_negative_or_no_seeds_in_one_line(cls):
  """``seeds`` is declared by ``config.seeds_setting`` everywhere: the same
  checks and the same one-line errors naming it."""
  assert {f.name: f for f in dataclasses.fields(cls)}["seeds"].metadata["distinct"]
  for seeds, message in (((0, 0), "`seeds` must name distinct values, got [0, 0]"),
                         ((), "`seeds` must name at least one value"),
                         ((-1,), "`seeds` must be numbers >= 0, got [-1]")):
    with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
      cls(seeds=seeds)


def test_item_bounds_of_tuple_settings():
  with pytest.raises(config_lib.ConfigError, match=r"`gammas` must be numbers > 0, got \[0.1, 0.0\]"):
    nsgd_table.Settings(gammas=(0.1, 0.0))
  with pytest.raises(config_lib.ConfigError, match=r"`batch_sizes` must be numbers >= 1"):
    walk.Settings(batch_sizes=(0,))
  with pytest.raises(config_lib.ConfigError, match=r"`learning_rates` must name distinct"):
    step_length.Settings(learning_rates=(0.1, 0.1))
  with pytest.raises(config_lib.ConfigError, match=r"`widths` must be numbers >= 1"):
    phase.Settings(widths=(0,))
