"""The training loop and scripts/train.py end to end."""

import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, run_cli
from tf_sharpness.cli import flags as flags_lib
from tf_sharpness import config as config_lib
from tf_sharpness import training
from tf_sharpness.errors import ConfigError

TRAIN = os.path.join(REPO, "scripts", "train.py")


def tiny(**overrides) -> training.Config:
  base = dict(dataset="cifar10_mini", train_size=200, model="fcn", depth=1,
              width=16, batch_size=50, steps=6, spectrum_every=3, spectrum_k=2,
              spectrum_iters=30, hessian_size=40, eval_every=3, eval_size=100,
              log_every=1, learning_rate=0.05, deterministic=True)
  base.update(overrides)
  return training.Config(**base)


def test_script_end_to_end(tmp_path):
  logdir = str(tmp_path / "run")
  cfg_path = tmp_path / "tiny.cfg"
  cfg_path.write_text(flags_lib.flagfile_text(tiny(logdir=logdir, density_every=6,
                                                   density_runs=2, density_iters=10,
                                                   trace_every=6, trace_samples=4)))
  proc = run_cli("train", f"--flagfile={cfg_path}", "--steps=6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
  records = training.read_metrics(logdir)
  steps = [r["step"] for r in records]
  assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 6
  for r in records:
    assert {"step", "epoch"} <= set(r)
  trained = [r for r in records if "loss" in r]
  assert len(trained) == 6 and all(np.isfinite(r["loss"]) for r in trained)
  measured = [r for r in records if "top_eigenvalues" in r]
  assert [r["step"] for r in measured] == [0, 3, 6]
  for r in measured:
    assert len(r["top_eigenvalues"]) == 2
    assert r["top_eigenvalues"][0] >= r["top_eigenvalues"][1] > 0
  assert "trace" in records[-1] and "test_accuracy" in records[-1]
  # progress lines with step, loss and the top eigenvalue
  assert "lambda_max" in proc.stderr and "loss" in proc.stderr
  # flags.txt is a flagfile that reproduces the run's settings
  flags_txt = open(os.path.join(logdir, "flags.txt")).read()
  assert "--steps=6" in flags_txt and "--model=fcn" in flags_txt
  # scalars and Spectrum summaries are in the event file
  tags = set()
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.add((value.tag, value.metadata.plugin_data.plugin_name))
  names = {t for t, _ in tags}
  assert {"train/loss", "hessian/eigenvalue_1", "eval/test_accuracy",
          "hessian/top_eigenvalues", "hessian/density", "hessian/trace"} <= names
  assert ("hessian/top_eigenvalues", "spectrum") in tags


# Resume after a stop or a kill -9: tests/training/test_resume.py (exact comparisons).


def test_divergence_exits_2_and_keeps_logs(tmp_path):
  logdir = str(tmp_path / "div")
  proc = run_cli("train", "--dataset=cifar10_mini", "--train_size=100", "--model=fcn",
                    "--depth=1", "--width=8", "--batch_size=50", "--steps=50",
                    "--learning_rate=1e6", "--spectrum_every=0", "--eval_every=0",
                    "--log_every=1", f"--logdir={logdir}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "diverged" in proc.stderr
  records = training.read_metrics(logdir)
  assert records[-1].get("diverged") is True
  assert len(records) >= 2  # the steps before the divergence are kept


@pytest.mark.parametrize("args,message", [
    (["--optimizer=rmsprop"], "optimizer"),
    (["--learning_rate=-1"], "--learning_rate must be > 0"),
    (["--batch_size=100000"], "--batch_size=100000 exceeds"),
    (["--dataset=/no/such/folder"], "no such file or directory"),
    (["--dataset=imagenet_not_here"], "is not known"),
    (["--lr_schedule=step"], "--lr_boundaries"),
    (["--hessian_fraction=1.5"], "--hessian_fraction must be in (0, 1]"),
])
def test_bad_flags_name_the_flag(tmp_path, args, message):
  proc = run_cli("train", f"--logdir={tmp_path}/bad", "--steps=1", *args, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]


def test_bad_image_folder_layout(tmp_path):
  (tmp_path / "imgs" / "cat").mkdir(parents=True)
  proc = run_cli("train", f"--logdir={tmp_path}/bad", f"--dataset={tmp_path}/imgs",
                    timeout=120)
  assert proc.returncode == 1
  assert "ROOT/{train,test}/<class>" in proc.stderr


def test_mirrored_training_matches_one_device(tmp_path):
  one = training.train(tiny(logdir=str(tmp_path / "one"), steps=4,
                            spectrum_every=4, eval_every=0))
  two = training.train(tiny(logdir=str(tmp_path / "two"), steps=4,
                            spectrum_every=4, eval_every=0, strategy="mirrored"))
  assert len(tf.config.list_logical_devices("CPU")) == 2
  a, b = training.read_metrics(str(tmp_path / "one")), training.read_metrics(str(tmp_path / "two"))
  for ra, rb in zip(a, b):
    if "loss" in ra:
      assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
  np.testing.assert_allclose(two["top_eigenvalues"], one["top_eigenvalues"],
                             rtol=1e-4)


def test_full_batch_gd_and_mse(tmp_path):
  cfg = tiny(logdir=str(tmp_path / "gd"), batch_size=0, loss="mse",
             activation="tanh", steps=3)
  last = training.train(cfg)
  records = training.read_metrics(cfg.logdir)
  assert all(r["epoch"] == r["step"] for r in records)  # one step per epoch
  assert last["top_eigenvalues"][0] > 0


def test_config_fields_all_have_flags_with_help_and_choices():
  """Each setting is declared once, in config.py: the flags come from it."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  flags_lib.define_flags(fv)
  for field in dataclasses.fields(training.Config):
    flag = fv[field.name]
    assert field.metadata["help"] and field.metadata["help"] in flag.help
    if field.metadata["choices"] is not None:
      assert list(flag.parser.enum_values) == list(field.metadata["choices"])
  assert list(fv["optimizer"].parser.enum_values) == list(config_lib.OPTIMIZERS)
  with pytest.raises(ConfigError, match="`spectrum_k` must be >= 1"):
    training.Config(spectrum_k=0).validate()
  with pytest.raises(ConfigError, match="`trace_method='x'` is not allowed"):
    training.Config(trace_method="x").validate()


def test_all_landscape_probes_in_a_run(tmp_path):
  logdir = str(tmp_path / "probes")
  cfg = tiny(logdir=logdir, steps=4, spectrum_every=0, slice_every=2,
             slice_directions=(1, 2), slice_alphas=(-1.0, 0.0, 1.0),
             slice_2d_every=4, slice_2d_points=3, step_analysis_every=2,
             step_factors=(0.5, 1.0, 2.0), walk_steps="1:3", walk_points=5,
             landscape_size=60, landscape_minibatches=2)
  proc = run_cli("train", *flags_lib.flagfile_text(cfg).split())
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = {r["step"]: r for r in training.read_metrics(logdir)}
  for step in (0, 2):
    sl = records[step]["slices"]
    assert set(sl) == {"e1", "e2", "random"}
    assert len(sl["e1"]["losses"]) == 3 and sl["e1"]["scale"] > 0
    sa = records[step]["step_analysis"]
    assert set(sa) == {"e1", "e2", "random", "full step"}
    assert len(sa["full step"]) == 3
  assert "surface_e1_e2_min" in records[0]
  for step in (1, 2):
    walk = records[step]["walk"]
    assert len(walk["losses"]) == 5 and walk["alphas"][0] == 0.0
    assert walk["grad_norm_sq"] > 0
  assert records[1]["walk"]["grad_cosine"] is None
  assert -1 <= records[2]["walk"]["grad_cosine"] <= 1
  assert "walk" not in records[3]
  tags = set()
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  assert {"landscape/slice_e1", "landscape/slice_random", "landscape/walk",
          "landscape/step_analysis", "landscape/surface_e1_e2",
          "landscape/surface_filter_normalized", "walk/grad_cosine",
          "landscape/e1_overshoot_fraction", "landscape/e1_increase_fraction"} <= tags
  assert len(records[2]["step_e1_scaling"]["line_minimum"]) == 2


def test_bad_probe_flags():
  with pytest.raises(ValueError, match="`walk_steps` must be START:END"):
    tiny(walk_steps="3-5").validate()
  with pytest.raises(ValueError, match="`slice_directions`"):
    tiny(slice_directions=(0,)).validate()


def test_tracking_records_warm_starts_rotation_and_spread(tmp_path):
  logdir = str(tmp_path / "track")
  training.train(tiny(logdir=logdir, steps=4, spectrum_every=2, spectrum_repeats=3,
                      trace_every=4, trace_samples=9))
  records = [r for r in training.read_metrics(logdir) if "top_eigenvalues" in r]
  assert [r["spectrum_warm_start"] for r in records] == [False, True, True]
  assert "principal_angles" not in records[0]
  for r in records[1:]:
    assert len(r["principal_angles"]) == 2
    assert 0 <= r["gradient_overlap"] <= 1
    assert len(r["top_eigenvalues_std"]) == 2 and r["top_eigenvalues_std"][0] > 0
  assert records[0]["hessian_definition"]["batchnorm_mode"] == "moving statistics"
  assert records[0]["hessian_definition"]["examples"] == 40
  assert records[-1]["trace_stderr"] > 0


def test_nsgd_in_the_loop_reuses_the_spectrum_measurement(tmp_path, monkeypatch):
  from tf_sharpness.probes import base
  calls = []
  real = base.top_eigenpairs

  def counting(*args, **kwargs):
    calls.append(kwargs.get("k"))
    return real(*args, **kwargs)

  monkeypatch.setattr(base, "top_eigenpairs", counting)
  logdir = str(tmp_path / "nsgd")
  training.train(tiny(logdir=logdir, steps=4, optimizer="nsgd", nsgd_gamma=0.1,
                      nsgd_top_k=3, nsgd_refresh_every=2, spectrum_every=2,
                      spectrum_k=2, eval_every=0))
  # Steps 0 and 2: one measurement each serves both the log (k=2) and the
  # optimizer (top_k=3); step 4 (the end) is measured but not refreshed.
  assert calls == [3, 3, 3]
  records = [r for r in training.read_metrics(logdir) if "top_eigenvalues" in r]
  assert [len(r["top_eigenvalues"]) for r in records] == [2, 2, 2]


def test_nsgd_gamma_one_in_the_loop_equals_sgd(tmp_path):
  a = training.train(tiny(logdir=str(tmp_path / "sgd"), steps=4, eval_every=0))
  b = training.train(tiny(logdir=str(tmp_path / "nsgd"), steps=4, eval_every=0,
                          optimizer="nsgd", nsgd_gamma=1.0, nsgd_top_k=2,
                          nsgd_refresh_every=2))
  ra, rb = training.read_metrics(str(tmp_path / "sgd")), training.read_metrics(str(tmp_path / "nsgd"))
  for x, y in zip(ra, rb):
    if "loss" in x:
      assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
  assert b["top_eigenvalues"] == pytest.approx(a["top_eigenvalues"], rel=1e-4)
  c = training.train(tiny(logdir=str(tmp_path / "nsgd0"), steps=4, eval_every=0,
                          optimizer="nsgd", nsgd_gamma=0.0, nsgd_top_k=2,
                          nsgd_refresh_every=2))
  assert c["top_eigenvalues"] != pytest.approx(a["top_eigenvalues"], rel=1e-6)


def test_target_train_loss_stops_with_the_end_of_run_measurements(tmp_path, caplog):
  logdir = str(tmp_path / "target")
  first = training.train(tiny(logdir=str(tmp_path / "probe"), steps=6, eval_every=2))
  losses = {r["step"]: r["train_loss"] for r in training.read_metrics(str(tmp_path / "probe"))
            if "train_loss" in r}
  target = losses[4] + 1e-6  # first reached at step 4 (if not before)
  expected = min(s for s, l in losses.items() if l <= target)
  with caplog.at_level("INFO", logger="tf_sharpness"):
    training.train(tiny(logdir=logdir, steps=6, eval_every=2, spectrum_every=5,
                        target_train_loss=target, density_every=5, density_runs=1,
                        density_iters=5))
  records = training.read_metrics(logdir)
  last = records[-1]
  assert last["step"] == expected and last["final"] and last["target_reached"]
  assert f"done: {expected} steps (target training loss reached)" in caplog.text
  # the end-of-run probes ran at the stopping step: spectrum and density
  assert "top_eigenvalues" in last and "density_matvecs" in last
  assert first["final"]


def test_stability_lines_follow_the_optimizer(tmp_path):
  sgd = training.train(tiny(logdir=str(tmp_path / "sgd"), momentum=0.5, steps=2,
                            spectrum_every=2, eval_every=0))
  assert sgd["stability_thresholds"] == pytest.approx({"2(1+β)/η": 3 / 0.05})
  nsgd = training.train(tiny(logdir=str(tmp_path / "nsgd"), optimizer="nsgd",
                             nsgd_gamma=0.25, nsgd_complement=2.0, nsgd_top_k=2,
                             steps=2, spectrum_every=2, eval_every=0))
  assert nsgd["stability_thresholds"] == pytest.approx(
      {"2/(γη)": 2 / (0.25 * 0.05), "2/(cη)": 2 / (2.0 * 0.05)})
  adam = training.train(tiny(logdir=str(tmp_path / "adam"), optimizer="adam",
                             learning_rate=0.001, steps=2, spectrum_every=1, eval_every=0))
  assert adam["stability_thresholds"] == {}  # Adam's line is on P^-1 H, not on H
  assert adam["preconditioned_thresholds"] == pytest.approx({"(2+2β₁)/((1−β₁)η)": 38000})
  assert adam["preconditioned_top_eigenvalues"][0] > 0
  # The definition of the measured Hessian comes from the operator itself.
  definition = adam["hessian_definition"]
  assert definition["examples"] == 40 and definition["subset"] == "fixed"
  assert definition["batchnorm_mode"] == "moving statistics"
  assert definition["regularization"] is True and definition["subset_seed"] == 7
  resampled = training.train(tiny(logdir=str(tmp_path / "resample"), hessian_resample=True,
                                  steps=1, spectrum_every=1, eval_every=0))
  assert resampled["hessian_definition"]["subset"] == "redrawn at every measurement"
  assert "subset_seed" not in resampled["hessian_definition"]
