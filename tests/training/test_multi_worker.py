"""--strategy=multi_worker: two worker processes on the loopback interface
(TF_CONFIG) train like one process on the same global batch, and only the
chief writes the run folder."""

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from tf_sharpness.cli import flags as flags_lib
from tf_sharpness import training

TRAIN = os.path.join(REPO, "scripts", "train.py")


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def tiny(logdir, **overrides):
  base = dict(logdir=logdir, dataset="cifar10_mini", train_size=200, model="fcn",
              depth=1, width=16, batch_size=50, steps=4, spectrum_every=2, spectrum_k=2,
              spectrum_iters=30, spectrum_tol=1e-6, hessian_size=40, eval_every=4,
              eval_size=100, log_every=1, learning_rate=0.05, checkpoint_every=2,
              deterministic=True)
  base.update(overrides)
  return training.Config(**base)


def run_workers(logdir, *extra, timeout=600):
  cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(2)]}
  flags = flags_lib.flagfile_text(tiny(logdir, strategy="multi_worker")).split()
  procs = []
  for index in range(2):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    procs.append(subprocess.Popen([sys.executable, TRAIN, *flags, *extra], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True))
  errors = []
  try:
    for p in procs:
      _, err = p.communicate(timeout=timeout)
      errors.append(err)
  finally:
    for p in procs:
      p.kill()
  for p, err in zip(procs, errors):
    assert p.returncode == 0, err[-3000:]


def test_two_workers_match_one_process(tmp_path):
  logdir = str(tmp_path / "mw")
  run_workers(logdir)
  one = str(tmp_path / "one")
  training.train(tiny(one))
  a, b = training.read_metrics(one), training.read_metrics(logdir)
  assert [r["step"] for r in b] == [r["step"] for r in a] == [0, 1, 2, 3, 4]
  for ra, rb in zip(a, b):
    if "loss" in ra:
      assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
    if "top_eigenvalues" in ra:
      np.testing.assert_allclose(rb["top_eigenvalues"], ra["top_eigenvalues"], rtol=1e-4)
  # Only the chief wrote here: one event file, one metrics.jsonl, its checkpoints.
  assert len(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))) == 1
  assert sorted(os.listdir(logdir)) == sorted(
      ["checkpoints", "flags.txt", "metrics.jsonl",
       os.path.basename(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))[0])])
  # Both workers resume from the chief's checkpoint and continue together.
  run_workers(logdir, "--resume", "--steps=6")
  steps = [r["step"] for r in training.read_metrics(logdir)]
  assert steps == [0, 1, 2, 3, 4, 5, 6]
