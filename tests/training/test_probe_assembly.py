"""One probe assembly (tf_sharpness.probes.assembly) for the training loop
and SpectrumCallback: every probe setting of Config turns on its probe,
the callback and the loop go through the same function, and the number
of eigenpairs comes from the probes."""

import dataclasses

import keras
import numpy as np
import pytest

import tf_sharpness as tfs
from tf_sharpness import config as config_lib
from tf_sharpness import probes as P
from tf_sharpness.probes import assembly


def test_every_probe_schedule_of_config_is_assembled():
  """A new `*_every` setting in Config that the assembly does not read
  fails here (log_every and checkpoint_every are bookkeeping)."""
  every = {f.name for f in dataclasses.fields(config_lib.Config)
           if f.name.endswith("_every")} - {"log_every", "checkpoint_every"}
  assert every <= set(assembly.PROBE_FIELDS)
  spec = P.ProbeSpec()
  for name in assembly.PROBE_FIELDS:  # defaults are Config's, not copies
    assert getattr(spec, name) == getattr(config_lib.Config(), name)


@pytest.mark.parametrize("overrides,kind", [
    (dict(spectrum_blocks="layer"), "BlockSpectrumProbe"),
    (dict(optimizer="nsgd"), "NSGDRefreshProbe"),
    (dict(slice_every=2), "SliceProbe"),
    (dict(slice_2d_every=2), "SurfaceProbe"),
    (dict(step_analysis_every=2), "StepAnalysisProbe"),
    (dict(walk_steps="1:3"), "WalkProbe"),
    (dict(smallest_every=2), "SmallestEigenvaluesProbe"),
    (dict(directional_every=2), "DirectionalProbe"),
    (dict(lambda_interval_every=2), "LambdaIntervalProbe"),
    (dict(sharpness_every=2), "SharpnessProbe"),
    (dict(density_every=2), "DensityProbe"),
    (dict(trace_every=2), "TraceProbe"),
    (dict(optimizer="adam"), "PreconditionedSpectrumProbe"),
])
def test_each_setting_turns_on_its_probe(overrides, kind):
  cfg = config_lib.Config(eval_every=0, **overrides)
  names = [type(p).__name__ for p in P.assemble(P.spec_from_config(cfg), dim=50)]
  assert names[0] == "SpectrumProbe" and kind in names
  off = [type(p).__name__ for p in P.assemble(
      P.spec_from_config(config_lib.Config(eval_every=0)), dim=50)]
  assert off == ["SpectrumProbe"]


def test_eigenpairs_come_from_the_probes():
  """With the spectrum off, slices up to e4 still measure eigenpairs: the
  spectrum probe runs (after the others ask) and the tracker needs 4."""
  spec = P.spec_from_config(config_lib.Config(spectrum_every=0, spectrum_k=2, eval_every=0,
                                              slice_every=3, slice_directions=(1, 4)))
  probes = P.assemble(spec, dim=50)
  assert [type(p).__name__ for p in probes] == ["SpectrumProbe", "SliceProbe"]
  assert not probes[0].schedule.every and P.eigenpairs_needed(probes) == 4
  assert P.assemble(P.spec_from_config(config_lib.Config(spectrum_every=0, eval_every=0)),
                    dim=50) == []


def test_the_callback_and_the_loop_share_the_assembly(monkeypatch):
  calls = []
  real = P.assemble
  monkeypatch.setattr(P, "assemble", lambda spec, **kw: calls.append(spec) or real(spec, **kw))
  x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
  y = x @ np.ones((3, 1), "float32")
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
  cb = tfs.SpectrumCallback(None, (x, y), every=2, k=2, blocks="layer", verbose=False)
  model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
  (spec,) = calls
  assert spec.spectrum_k == 2 and spec.spectrum_blocks == "layer"
  assert [type(p).__name__ for p in cb.probes] == ["SpectrumProbe", "BlockSpectrumProbe"]
  assert [r["step"] for r in cb.records if "top_eigenvalues" in r] == [0, 2]


def test_directional_quantities_reach_the_probe():
  cfg = config_lib.Config(eval_every=0, directional_every=2,
                          directional_quantities=("batch", "self_stabilization"))
  (directional,) = [p for p in P.assemble(P.spec_from_config(cfg), dim=50)
                    if type(p).__name__ == "DirectionalProbe"]
  assert directional.quantities == ("batch", "self_stabilization")
  assert directional.needs_landscape and directional.eigenpairs_needed == 1
  with pytest.raises(ValueError, match="`directional_quantities` must be a list of"):
    config_lib.Config(directional_quantities=("sharpest",)).validate()


def test_without_the_spectrum_the_others_set_how_many_eigenpairs():
  """NSGD's refresh with the spectrum off tracks nsgd_top_k eigenpairs, not
  spectrum_k (the tracker's size is checkpointed: more would break resume
  and change the directions)."""
  cfg = config_lib.Config(optimizer="nsgd", nsgd_top_k=2, nsgd_refresh_every=10,
                          spectrum_every=0, spectrum_k=5, eval_every=0)
  probes = P.assemble(P.spec_from_config(cfg), dim=50)
  assert probes[0].k == 2 and P.eigenpairs_needed(probes) == 2
  with_spectrum = P.assemble(P.spec_from_config(dataclasses.replace(cfg, spectrum_every=5)),
                             dim=50)
  assert with_spectrum[0].k == 5 and P.eigenpairs_needed(with_spectrum) == 5


def test_older_names_and_forms_still_work():
  import numpy as np
  from tf_sharpness import reuse, run_setup, training
  assert training.train_or_reuse is reuse.train_or_reuse
  assert training.build_probes is run_setup.build_probes
  probe = P.DirectionalProbe(P.Schedule(every=2), False)  # the older (schedule, critical)
  assert "critical_update" not in probe.quantities and not probe.critical
  # lists, numpy integers and whole floats are items as before
  config_lib.Config(slice_directions=[1, 3]).validate()
  config_lib.Config(lr_schedule="step", lr_boundaries=(1000.0,)).validate()
  config_lib.Config(slice_directions=tuple(np.arange(1, 3))).validate()
  with pytest.raises(ValueError, match="`slice_directions` must be a tuple of int"):
    config_lib.Config(slice_directions=(1.5,)).validate()
