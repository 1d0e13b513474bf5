"""Exact resume: a run stopped after a checkpoint and resumed writes the same
metrics.jsonl (byte for byte) and the same TensorBoard data (every step
once) as the uninterrupted run, under --deterministic."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from tensorboard.compat.proto import event_pb2

from conftest import REPO
from tf_sharpness.cli import flags as flags_lib
from tf_sharpness import train_step, training

TRAIN = os.path.join(REPO, "scripts", "train.py")
KILL_AT = 6  # stopped before the update of step 6; the checkpoint is at 4


def tiny(logdir, **overrides) -> training.Config:
  base = dict(logdir=logdir, dataset="cifar10_mini", train_size=200, model="fcn",
              depth=1, width=16, batch_size=50, steps=8, spectrum_every=2,
              spectrum_k=2, spectrum_iters=30, hessian_size=40, eval_every=4,
              eval_size=100, log_every=1, learning_rate=0.05, checkpoint_every=4,
              deterministic=True)
  base.update(overrides)
  return training.Config(**base)


def events(logdir):
  """{(tag, step): [serialized values]} over every event file of a run."""
  out = {}
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for raw in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(raw.numpy())
      for value in event.summary.value:
        value.ClearField("metadata")  # written with the first value of a tag only
        out.setdefault((value.tag, event.step), []).append(value.SerializeToString())
  return out


def metrics_text(logdir):
  with open(os.path.join(logdir, "metrics.jsonl")) as f:
    return f.read()


def assert_same_run(full, resumed):
  assert metrics_text(resumed) == metrics_text(full)
  a, b = events(full), events(resumed)
  assert sorted(b) == sorted(a)
  duplicated = {k: len(v) for k, v in b.items() if len(v) > 1}
  assert not duplicated, f"steps written twice: {duplicated}"
  assert b == a


CASES = {
    "sgd_momentum": dict(momentum=0.9, nesterov=True, directional_every=3),
    "nsgd": dict(optimizer="nsgd", nsgd_gamma=0.1, nsgd_top_k=2, nsgd_refresh_every=2,
                 momentum=0.5),
    "adam": dict(optimizer="adam", learning_rate=0.002),
    "step_schedule": dict(lr_schedule="step", lr_boundaries=(3, 5), lr_decay_factor=0.5),
    "augment": dict(augment=True),
    "walk": dict(walk_steps="3:8", walk_points=4, landscape_size=40, slice_every=4,
                 slice_directions=(1, 2), slice_alphas=(-1.0, 0.0, 1.0),
                 landscape_minibatches=2),
    "walk_two_windows": dict(walk_steps="1:3,5:8", walk_points=4, landscape_size=40),
    "lambda_interval": dict(lambda_interval_every=3, lambda_interval_batches=4,
                            directional_every=2,
                            directional_quantities=("gradient", "update", "batch")),
    "hessian_resample": dict(hessian_resample=True, trace_every=4, trace_samples=6),
    "spectrum_repeats": dict(spectrum_repeats=3, density_every=4, density_runs=2,
                             density_iters=8),
    "asam_sharpness_blocks": dict(sam_rho=0.5, sam_adaptive=True, sharpness_every=4,
                                  sharpness_measures=("adaptive_l2", "avg"),
                                  sharpness_steps=2, sharpness_samples=2,
                                  spectrum_blocks="layer"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch, case):
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  training.train(tiny(full, **CASES[case]))
  real_call = train_step.TrainStep.__call__

  def stop_at_kill_step(self, x, y, *, seed=(0, 0), **kwargs):
    if seed[1] == KILL_AT:  # probes of step 6 already wrote their summaries
      raise KeyboardInterrupt
    return real_call(self, x, y, seed=seed, **kwargs)

  monkeypatch.setattr(train_step.TrainStep, "__call__", stop_at_kill_step)
  with pytest.raises(KeyboardInterrupt):
    training.train(tiny(part, **CASES[case]))
  monkeypatch.setattr(train_step.TrainStep, "__call__", real_call)
  records = training.read_metrics(part)
  assert records[-1]["step"] == KILL_AT - 1  # written past the checkpoint at 4
  assert any(step >= 4 for _, step in events(part))
  training.train(tiny(part, resume=True, **CASES[case]))
  assert_same_run(full, part)
  if case == "walk":  # the cosine right after the resume needs the saved gradient
    walk = {r["step"]: r["walk"] for r in training.read_metrics(part) if "walk" in r}
    assert walk[3]["grad_cosine"] is None and walk[4]["grad_cosine"] is not None
  if case == "walk_two_windows":  # no cosine across the gap between the windows
    walk = {r["step"]: r["walk"] for r in training.read_metrics(part) if "walk" in r}
    assert sorted(walk) == [1, 2, 5, 6, 7]
    assert [walk[s]["grad_cosine"] is None for s in sorted(walk)] == [True, False, True,
                                                                       False, False]
  if case == "lambda_interval":
    steps = [r["step"] for r in training.read_metrics(part) if "lambda_max_interval" in r]
    assert steps == [0, 3, 6, 8], steps


def test_sigkill_inside_a_walk_window_then_resume(tmp_path):
  """A real `kill -9` of scripts/train.py after its first checkpoint, inside
  the walk window, then --resume: the same files as an uninterrupted run."""
  settings = dict(steps=60, checkpoint_every=5, spectrum_every=10, eval_every=0,
                  walk_steps="2:60", walk_points=3, landscape_size=40)
  full = str(tmp_path / "full")
  training.train(tiny(full, **settings))
  part = str(tmp_path / "killed")
  flagfile = tmp_path / "k.cfg"
  flagfile.write_text(flags_lib.flagfile_text(tiny(part, **settings)))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, TRAIN, f"--flagfile={flagfile}"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  state = os.path.join(part, "checkpoints", "checkpoint")  # written last
  try:
    deadline = time.time() + 120
    while not os.path.exists(state) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.02)
    time.sleep(0.3)  # let it write beyond the checkpoint
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  saved = tf.train.latest_checkpoint(os.path.join(part, "checkpoints"))
  assert saved, "no checkpoint was written before the kill"
  assert int(saved.rsplit("-", 1)[1]) < 60, "the run finished before the kill"
  done = subprocess.run([sys.executable, TRAIN, f"--flagfile={flagfile}", "--resume"],
                        capture_output=True, text=True, timeout=300, env=env)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "resumed from" in done.stderr
  assert_same_run(full, part)
