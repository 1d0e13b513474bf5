"""Declared once: every experiment's Settings field carries its help,
bounds and item types (config.setting / config.like), a field named like a
Config setting shares its choices instead of copying them, and the flags
are generated from the fields."""

import dataclasses

import pytest
from absl import flags

from tf_sharpness import config as config_lib
from tf_sharpness.cli import flags as flags_lib
from tf_sharpness.experiments import (eos, edge_quantities, sweep,
                                      nsgd_table, phase, step_length, walk)

SETTINGS = [eos.Settings, edge_quantities.Settings, sweep.Settings,
            nsgd_table.Settings, phase.Settings, step_length.Settings, walk.Settings]
CONFIG = {f.name: f for f in dataclasses.fields(config_lib.Config)}


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
