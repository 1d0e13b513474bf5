"""SpectrumCallback in model.fit: the README example, steps from
optimizer.iterations across initial_epoch and BackupAndRestore, logs for
History, MirroredStrategy; and NSGDRefresh as the same callback."""

import glob
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.compat.proto import event_pb2

import tf_sharpness as tfs
from conftest import REPO
from plugin_client import plugin_client
from tf_sharpness import probes, run_setup, training

README_MARK = "# tf-sharpness in model.fit"


def readme_example() -> str:
  text = open(os.path.join(REPO, "README.md")).read()
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  found = [b for b in blocks if b.startswith(README_MARK)]
  assert len(found) == 1, "the README's model.fit example is missing"
  return found[0]


def test_readme_example_runs_and_fills_the_spectrum_tab(tmp_path):
  code = readme_example()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "lambda_max after each epoch" in proc.stdout
  logdir = str(tmp_path / "logs" / "fit")
  assert {"train", "validation", "spectrum"} <= set(os.listdir(logdir))
  client = plugin_client(logdir)
  tags = client.get("/tags").get_json()
  assert tags["spectrum"]["hessian/top_eigenvalues"] == "eigenvalues"
  assert tags["spectrum"]["hessian/density"] == "density"
  points = client.get("/eigenvalues?run=spectrum&tag=hessian/top_eigenvalues").get_json()
  assert [p["step"] for p in points] == [0, 16, 32, 48, 64]  # 2 epochs of 32 steps
  for p in points:
    assert len(p["values"]) == 3 and p["values"][0] >= p["values"][1] >= p["values"][2]
    assert p["thresholds"][0]["label"] == "2(1+β)/η"
    assert p["thresholds"][0]["value"] == pytest.approx(2 * 1.9 / 0.05)
  density = client.get("/density?run=spectrum&tag=hessian/density").get_json()
  assert [p["step"] for p in density] == [0, 64]


def small_model(seed=0):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="tanh"),
                            keras.layers.Dense(3)])
  model.compile(optimizer=keras.optimizers.SGD(0.1),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


@pytest.fixture(scope="module")
def toy_data():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((96, 8)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
  return x, y


def event_steps(run_dir, tag):
  steps = []
  for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
    for raw in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(raw.numpy())
      steps += [event.step for v in event.summary.value if v.tag == tag]
  return sorted(steps)


def test_steps_follow_optimizer_iterations_across_fits(tmp_path, toy_data):
  x, y = toy_data  # 96 examples, batch 16: 6 steps per epoch
  model = small_model()
  cb = tfs.SpectrumCallback(str(tmp_path), hessian_data=(x[:32], y[:32]), every=4, k=2,
                            verbose=False)
  history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
  assert "lambda_max" in history.history
  model.fit(x, y, batch_size=16, epochs=3, initial_epoch=1, verbose=0, callbacks=[cb])
  steps = [r["step"] for r in training.read_metrics(str(tmp_path / "spectrum"))]
  # every 4 iterations, and at the end of each fit (6 and 18)
  assert steps == [0, 4, 6, 8, 12, 16, 18]
  assert event_steps(str(tmp_path / "spectrum"), "hessian/eigenvalue_1") == steps


class Crash(keras.callbacks.Callback):
  def __init__(self, at_iteration):
    super().__init__()
    self.at = at_iteration

  def on_train_batch_begin(self, batch, logs=None):
    if int(self.model.optimizer.iterations.numpy()) == self.at:
      raise RuntimeError("simulated preemption")


def test_backup_and_restore(tmp_path, toy_data):
  """Preempted in epoch 2, resumed by BackupAndRestore: every step once, and
  the probes' state (warm starts, rotation) restored with the model."""
  x, y = toy_data
  logdir, backup = str(tmp_path / "logs"), str(tmp_path / "backup")
  kwargs = dict(hessian_data=(x[:32], y[:32]), every=2, k=2, verbose=False)
  model = small_model()
  with pytest.raises(RuntimeError, match="preemption"):
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
              callbacks=[keras.callbacks.BackupAndRestore(backup),
                         tfs.SpectrumCallback(logdir, **kwargs), Crash(9)])
  run = os.path.join(logdir, "spectrum")
  assert max(r["step"] for r in training.read_metrics(run)) == 8  # past the backup at 6
  model = small_model(seed=1)  # a fresh process would start from other weights
  model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
            callbacks=[keras.callbacks.BackupAndRestore(backup),
                       tfs.SpectrumCallback(logdir, **kwargs)])
  records = training.read_metrics(run)
  steps = [r["step"] for r in records]
  assert steps == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
  assert event_steps(run, "hessian/eigenvalue_1") == steps
  # The first measurement after the restore warm-starts from the state saved
  # at the backup (step 6) and measures the rotation since step 4.
  at6 = next(r for r in records if r["step"] == 6)
  assert at6["spectrum_warm_start"] and "principal_angles" in at6
  # Uninterrupted, the same run measures the same eigenvalues at step 6.
  clean = str(tmp_path / "clean")
  model = small_model()
  model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
            callbacks=[tfs.SpectrumCallback(clean, **kwargs)])
  ref = next(r for r in training.read_metrics(os.path.join(clean, "spectrum"))
             if r["step"] == 6)
  np.testing.assert_allclose(at6["top_eigenvalues"], ref["top_eigenvalues"], rtol=1e-3)


def test_backup_and_restore_directional_and_interval(tmp_path, toy_data):
  """The directional probe (measured before and after the step) and the
  lambda_max interval, preempted in epoch 2 between a measurement and the
  step it belongs to, resumed by BackupAndRestore: every step recorded once,
  with the values of the uninterrupted run."""
  x, y = toy_data

  def callback(logdir):
    return tfs.SpectrumCallback(
        logdir, hessian_data=(x[:32], y[:32]), every=0, k=1, verbose=False,
        probes=[probes.DirectionalProbe(probes.Schedule(every=2)),
                probes.LambdaIntervalProbe(probes.Schedule(every=4), batches=4)])

  logdir, backup = str(tmp_path / "logs"), str(tmp_path / "backup")
  with pytest.raises(RuntimeError, match="preemption"):
    small_model().fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
                      callbacks=[keras.callbacks.BackupAndRestore(backup),
                                 callback(logdir), Crash(8)])
  run = os.path.join(logdir, "spectrum")
  # step 8's directional record waits for its update: not written at the crash
  assert [r["step"] for r in training.read_metrics(run) if "directional" in r] == [0, 2, 4, 6]
  small_model(seed=1).fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
                          callbacks=[keras.callbacks.BackupAndRestore(backup),
                                     callback(logdir)])
  clean = str(tmp_path / "clean")
  small_model().fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
                    callbacks=[callback(clean)])
  resumed = training.read_metrics(run)
  reference = training.read_metrics(os.path.join(clean, "spectrum"))
  for key, steps in (("directional", list(range(0, 18, 2))),
                     ("lambda_max_interval", [0, 4, 8, 12, 16])):
    got = [r for r in resumed if key in r]
    want = [r for r in reference if key in r]
    assert [r["step"] for r in got] == [r["step"] for r in want] == steps, key
    for a, b in zip(got, want):
      for name, value in b[key].items():
        if isinstance(value, float):
          np.testing.assert_allclose(a[key][name], value, rtol=1e-4, err_msg=f"{key}.{name}")
  assert event_steps(run, "directional/update") == list(range(0, 18, 2))
  assert event_steps(run, "hessian/lambda_max_upper") == [0, 4, 8, 12, 16]
  # the Spectrum tab's sections: directional curvature and the interval band
  tags = plugin_client(logdir).get("/tags").get_json()["spectrum"]
  assert tags["directional/curvature"] == "directional"
  assert tags["hessian/lambda_max_interval"] == "lambda_interval"


def test_mirrored_strategy_matches_one_device(tmp_path, toy_data):
  x, y = toy_data
  assert len(tf.config.list_logical_devices("CPU")) == 2
  one = tfs.SpectrumCallback(None, hessian_data=(x[:32], y[:32]), every=3, k=2,
                             verbose=False, tol=1e-6)
  small_model().fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False,
                    callbacks=[one])
  strategy = run_setup.strategy("mirrored")
  with strategy.scope():
    model = small_model()
  two = tfs.SpectrumCallback(None, hessian_data=(x[:32], y[:32]), every=3, k=2,
                             verbose=False, tol=1e-6)
  model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[two])
  assert [r["step"] for r in two.records] == [r["step"] for r in one.records] == [0, 3, 6]
  for a, b in zip(one.records, two.records):
    np.testing.assert_allclose(b["top_eigenvalues"], a["top_eigenvalues"], rtol=1e-4)


def test_probes_and_logs_in_fit(tmp_path, toy_data):
  x, y = toy_data
  model = small_model()
  cb = tfs.SpectrumCallback(
      str(tmp_path), hessian_data=(x[:32], y[:32]), every="epoch", k=2, verbose=False,
      probes=[probes.TraceProbe(probes.Schedule(every=6), samples=6),
              probes.SliceProbe(probes.Schedule(every=6), directions=(1, 2),
                                alphas=(-1.0, 0.0, 1.0)),
              probes.WalkProbe(range(2, 4), dim=99, points=3)],
      landscape_data=(x, y), landscape_size=48, landscape_batch_size=16,
      landscape_minibatches=2)
  history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
  assert len(history.history["lambda_max"]) == 2
  assert len(history.history["hessian_trace"]) == 2
  records = {r["step"]: r for r in training.read_metrics(str(tmp_path / "spectrum"))}
  assert set(records) == {0, 2, 3, 6, 12}
  assert set(records[6]["slices"]) == {"e1", "e2", "random"}
  assert records[3]["walk"]["grad_cosine"] is None  # fit does not expose gradients
  assert len(records[2]["walk"]["losses"]) == 3


def test_nsgd_refresh_counts_optimizer_iterations(toy_data):
  x, y = toy_data
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="tanh"),
                            keras.layers.Dense(3)])
  model.compile(optimizer=tfs.NSGD(0.1, gamma=0.5, top_k=2),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  refresh = tfs.NSGDRefresh((x[:32], y[:32]), every=4, verbose=False)
  model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[refresh])
  model.fit(x, y, batch_size=16, epochs=2, initial_epoch=1, verbose=0,
            callbacks=[refresh])
  assert [r["step"] for r in refresh.records] == [0, 4, 8]
  assert refresh.num_refreshes == 3
  assert all(len(r["top_eigenvalues"]) == 2 for r in refresh.records)


def test_a_new_fit_into_a_used_folder_needs_overwrite(tmp_path, toy_data):
  x, y = toy_data
  kwargs = dict(hessian_data=(x[:32], y[:32]), every=3, k=1, verbose=False)
  small_model().fit(x, y, batch_size=16, epochs=1, verbose=0,
                    callbacks=[tfs.SpectrumCallback(str(tmp_path), **kwargs)])
  run = str(tmp_path / "spectrum")
  before = training.read_metrics(run)
  from tf_sharpness import rundir
  with pytest.raises(rundir.RunDirError, match="overwrite=True"):
    small_model(seed=3).fit(x, y, batch_size=16, epochs=1, verbose=0,
                            callbacks=[tfs.SpectrumCallback(str(tmp_path), **kwargs)])
  assert training.read_metrics(run) == before
  small_model(seed=3).fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[
      tfs.SpectrumCallback(str(tmp_path), overwrite=True, **kwargs)])
  after = training.read_metrics(run)
  assert [r["step"] for r in after] == [0, 3, 6]
  assert after[0]["top_eigenvalues"] != before[0]["top_eigenvalues"]  # the new model


def test_bad_callback_settings_are_named(toy_data):
  x, y = toy_data
  model = small_model()
  model.compile(optimizer=keras.optimizers.SGD(0.1), steps_per_execution=4,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  with pytest.raises(ValueError, match="steps_per_execution=4.*every=6"):
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[
        tfs.SpectrumCallback(None, hessian_data=(x[:32], y[:32]), every=6)])
  with pytest.raises(ValueError, match="need landscape_data"):
    small_model().fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[
        tfs.SpectrumCallback(None, hessian_data=(x[:32], y[:32]), probes=[
            probes.SliceProbe(probes.Schedule(every=2))])])
