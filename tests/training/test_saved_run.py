"""tf_sharpness.saved_run and `tf-sharpness measure`: a finished run's last
checkpoint measured again, its weights and Hessian subsample exactly the
run's (the subsample's lambda_max is the run's own final measurement)."""

import json

import numpy as np
import pytest

import tf_sharpness as tfs
from conftest import run_cli
from tf_sharpness import losses, saved_run, training
from tf_sharpness.errors import ConfigError


def _run(logdir):
  cfg = training.Config(logdir=str(logdir), dataset="cifar10_mini", train_size=120,
                        model="fcn", depth=1, width=16, batch_size=40, steps=6,
                        spectrum_every=3, spectrum_k=1, spectrum_tol=1e-6, hessian_size=30,
                        log_every=3, learning_rate=0.05, checkpoint_every=3, eval_every=3,
                        eval_size=50)
  training.train(cfg)
  return cfg


def test_the_last_checkpoint_measured_again(tmp_path):
  cfg = _run(tmp_path / "run")
  final = training.read_metrics(cfg.logdir)[-1]
  run = saved_run.load(cfg.logdir)
  assert run.step == 6 and len(run.data.train_y) == 120
  assert run.hessian_subset()[0].shape[0] == 30
  res = saved_run.measure(run, confidence=0.9, batches=6, tol=1e-6)
  # the run's weights and subsample: its own final lambda_max
  np.testing.assert_allclose(res["subset_lambda_max"], final["top_eigenvalues"][0], rtol=1e-4)
  # all 120 examples, against an operator built here on them
  op = tfs.HessianOperator(run.model, losses.mean_loss("xent"),
                           (run.data.train_x, run.data.train_y))
  ref = tfs.top_eigenpairs(op, k=1, tol=1e-8).eigenvalues[0]
  np.testing.assert_allclose(res["lambda_max"], ref, rtol=1e-4)
  assert res["examples"] == 120 and res["step"] == 6
  assert res["interval"]["lower"] <= res["interval"]["upper"]
  assert res["interval_contains"] == (res["interval"]["lower"] <= res["lambda_max"]
                                      <= res["interval"]["upper"])
  assert "| run | 6 | 40.0 | 120 |" in saved_run.table([res])
  # the loss the run reported (on its first eval_size = 50), and on all 120
  np.testing.assert_allclose(res["train_loss_evaluation_set"], final["train_loss"], rtol=1e-5)
  assert res["evaluation_set_examples"] == 50
  assert abs(res["train_loss_all"] - res["train_loss_evaluation_set"]) > 1e-4
  with pytest.raises(ConfigError, match="`examples` must be in"):
    saved_run.measure(run, examples=500)
  with pytest.raises(ConfigError, match="no checkpoint"):
    saved_run.load(str(tmp_path))
  with pytest.raises(ConfigError, match="`batches` must be even"):
    saved_run.Settings(logdirs=(cfg.logdir,), batches=5)


@pytest.mark.slow
def test_measure_subcommand(tmp_path):
  cfg = _run(tmp_path / "run")
  out = tmp_path / "m.json"
  proc = run_cli("measure", f"--logdirs={cfg.logdir}", "--examples=60", "--batches=6",
                 f"--json={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  (res,) = json.loads(out.read_text())
  assert res["examples"] == 60 and "| run | 6 |" in proc.stdout
  proc = run_cli("measure", f"--logdirs={tmp_path}")
  assert proc.returncode == 1 and "no checkpoint" in proc.stderr
