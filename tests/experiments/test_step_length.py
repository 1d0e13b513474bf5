"""The step-length experiment (tf_sharpness.experiments.step_length): its
runs, its result's JSON round trip, its tables and its flags."""

import dataclasses
import json

import pytest
from absl import flags

from tf_sharpness.cli import flags as flags_lib
from tf_sharpness import training
from tf_sharpness.errors import ConfigError
from tf_sharpness.experiments import step_length


def test_runs_summarize_reuse_and_round_trip(tmp_path):
  settings = step_length.Settings(train_size=40, batch_size=8, steps=4, every=2,
                                  minibatches=2, eval_size=16, learning_rates=(0.05,),
                                  seeds=(0, 1), out=str(tmp_path))
  result = step_length.run(settings)
  assert [(r.learning_rate, r.seed) for r in result.runs] == [(0.05, 0), (0.05, 1)]
  records = training.read_metrics(str(tmp_path / "lr0.05_seed1"))
  measured = [r for r in records if "step_e1_scaling" in r]
  run = result.runs[1]
  assert run.steps == [r["step"] for r in measured] == [0, 2]
  assert run.lambda_max == [r["top_eigenvalues"][0] for r in measured]
  assert run.overshoot_fraction == [r["step_e1_scaling"]["overshoot_fraction"]
                                    for r in measured]
  s = run.summary()
  assert s["measurements"] == 2 and 0 <= s["overshoot_fraction"] <= 1
  assert s["eta_lambda_max"] == pytest.approx(0.05 * sum(run.lambda_max) / 2)
  want = sorted(min(1 / (0.05 * lam), 2.0) for lam in run.lambda_max)
  assert s["predicted_line_minimum_median"] == pytest.approx(sum(want) / 2)
  assert len(s["full_step"]) == len(step_length.ALPHAS)
  # rerun: the finished runs are reused, not retrained
  mtime = (tmp_path / "lr0.05_seed0" / "metrics.jsonl").stat().st_mtime_ns
  again = step_length.run(settings)
  assert (tmp_path / "lr0.05_seed0" / "metrics.jsonl").stat().st_mtime_ns == mtime
  assert again.to_json() == result.to_json()
  loaded = step_length.Result.from_json(json.loads(json.dumps(result.to_json())))
  assert loaded.to_json() == result.to_json()
  table = step_length.table(loaded).splitlines()
  assert len(table) == 2 + 3 and table[-1].startswith("| **0.05** | mean ± std")
  steps = step_length.trajectory_table(loaded).splitlines()
  assert [line.split(" | ")[1] for line in steps[2:]] == ["0", "2"]
  with pytest.raises(ValueError, match="step_length"):
    step_length.Result.from_json({"runs": []})


def test_settings_flags_are_declared_once_and_name_the_flag():
  fv = flags.FlagValues()
  flags_lib.define_settings_flags(step_length.Settings, fv)
  fv(["prog", "--learning_rates=0.1,0.01", "--seeds=3"])
  settings = flags_lib.settings_from_flags(step_length.Settings, fv)
  assert settings.learning_rates == (0.1, 0.01) and settings.seeds == (3,)
  assert settings.steps == step_length.Settings().steps
  with pytest.raises(flags.IllegalFlagValueError, match="seeds.*int values"):
    fv["seeds"].parse("a,b")
  fv(["prog", "--seeds=1,1"])
  with pytest.raises(ConfigError, match="--seeds must name distinct values"):
    flags_lib.settings_from_flags(step_length.Settings, fv)
  # choices and bounds come from the settings' metadata: absl refuses
  # them while parsing, naming the flag, and the library refuses them too
  with pytest.raises(flags.IllegalFlagValueError, match="--model=vgg: value should be one of"):
    fv(["prog", "--seeds=1", "--model=vgg"])
  with pytest.raises(flags.IllegalFlagValueError, match="--every=0: 0 is not a positive integer"):
    fv(["prog", "--every=0"])
  with pytest.raises(ConfigError, match="`model='vgg'` is not allowed"):
    step_length.Settings(model="vgg")
  with pytest.raises(ConfigError, match="`every` must be >= 1"):
    step_length.Settings(every=0)
  # the shared settings are Config's own (help and choices not copied)
  from tf_sharpness import config as config_lib
  assert fv["model"].help.endswith({f.name: f for f in dataclasses.fields(
      config_lib.Config)}["model"].metadata["help"])
