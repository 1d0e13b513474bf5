"""The experiment drivers on tiny settings (the full runs live in docs/results.md)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def test_edge_of_stability_driver(tmp_path):
  out = str(tmp_path / "eos")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "edge_of_stability.py"),
       "--learning_rates=0.05", "--momentum_runs=0.05:0.5", "--steps=4",
       "--train_size=50", "--spectrum_every=2", f"--out={out}"],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.load(open(os.path.join(out, "eos.json")))
  assert [r["run"] for r in results] == ["lr0.05", "lr0.05_beta0.5"]
  assert results[0]["threshold"] == pytest.approx(40.0)
  assert results[1]["threshold"] == pytest.approx(60.0)
  for r in results:
    assert r["steps"] == [0, 2, 4]
    late = r["sharpness"][-1:]  # late fraction 0.2 of 3 measurements: the last
    assert r["late_ratio"] == pytest.approx(sum(late) / len(late) / r["threshold"])
  assert "ratio" in proc.stdout


def _phase(out, *extra):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "phase_diagram.py"),
       "--depths=1,2", "--widths=8,16", "--train_size=64", "--batch_size=32",
       "--hessian_size=32", "--steps=2", "--dx=1.5", "--x_max=6", "--workers=2",
       f"--out={out}", *extra],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_phase_diagram_driver_sweeps_resumes_and_shards(tmp_path):
  import csv
  out = str(tmp_path / "phase")
  proc = _phase(out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = list(csv.DictReader(open(os.path.join(out, "phase.csv"))))
  assert {(r["depth"], r["width"]) for r in rows} == {("1", "8"), ("1", "16"),
                                                      ("2", "8"), ("2", "16")}
  records = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl"))]
  for (d, w) in ((1, 8), (2, 16)):
    mine = [r for r in records if (r["depth"], r["width"]) == (d, w)]
    cs = [r["c"] for r in mine]
    assert cs == sorted(cs) and cs[0] == 1.0
    # The sweep goes on until the first divergence (or x_max).
    assert all(not r["diverged"] for r in mine[:-1])
    row = next(r for r in rows if (int(r["depth"]), int(r["width"])) == (d, w))
    ok = [r["c"] for r in mine if not r["diverged"]]
    assert float(row["c_max"]) == max(ok)
    assert float(row["lambda0"]) > 0
  assert os.path.exists(os.path.join(out, "phase.png"))
  # Rerunning resumes: nothing is run again.
  again = _phase(out)
  assert again.returncode == 0 and "4 done, 0 to run" in again.stdout
  # A shard takes every n-th configuration.
  shard = _phase(str(tmp_path / "shard"), "--shard=1/2")
  assert shard.returncode == 0, shard.stderr[-2000:]
  rows = list(csv.DictReader(open(os.path.join(str(tmp_path / "shard"), "phase.csv"))))
  assert [(r["depth"], r["width"]) for r in rows] == [("1", "16"), ("2", "16")]


def test_walk_with_sgd_driver(tmp_path):
  out = str(tmp_path / "walk")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "walk_with_sgd.py"),
       "--learning_rates=0.01,0.5", "--window=1:4", "--train_size=100",
       "--batch_size=20", "--landscape_size=40", "--walk_points=5",
       "--model=fcn", f"--out={out}"],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.load(open(os.path.join(out, "walk.json")))
  assert [r["learning_rate"] for r in rows] == [0.01, 0.5]
  for r in rows:
    assert r["steps"] == 3
    assert 0 <= r["interior_minimum_fraction"] <= 1
    assert -1 <= r["mean_grad_cosine"] <= 1


def test_nsgd_table_driver(tmp_path):
  out = str(tmp_path / "nsgd")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "nsgd_table.py"),
       "--gammas=0.5", "--steps=4", "--train_size=100", "--batch_size=20",
       "--top_k=2", "--refresh_every=2", "--model=fcn", "--hessian_fraction=0.3",
       f"--out={out}"],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.load(open(os.path.join(out, "nsgd_table.json")))
  assert [r["run"] for r in rows] == ["SGD", "NSGD gamma=0.5"]  # a table of 2 rows
  for r in rows:
    assert r["final_lambda_max"] > 0 and 0 <= r["test_accuracy"] <= 1
  assert "| SGD |" in proc.stdout
  # Started again, it reuses the finished runs and prints the same table.
  again = subprocess.run(proc.args, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert again.returncode == 0 and again.stderr.count("reusing the finished run") == 2
  assert json.load(open(os.path.join(out, "nsgd_table.json"))) == rows


def test_sharpness_vs_lr_batch_driver(tmp_path):
  out = str(tmp_path / "svlb")
  args = [sys.executable, os.path.join(REPO, "scripts", "sharpness_vs_lr_batch.py"),
          "--learning_rates=0.1,0.01", "--lr_sweep_batch=25", "--batch_sizes=10,50",
          "--batch_sweep_lr=0.05", "--epochs=1", "--measures_per_epoch=2",
          "--train_size=100", "--model=fcn", "--top_k=2", "--hessian_fraction=0.3",
          "--eval_size=50", f"--out={out}"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.load(open(os.path.join(out, "sharpness.json")))
  assert [(r["sweep"], r["learning_rate"], r["batch_size"]) for r in rows] == [
      ("learning rate", 0.1, 25), ("learning rate", 0.01, 25),
      ("batch size", 0.05, 10), ("batch size", 0.05, 50)]
  for r in rows:
    # Measured twice per epoch plus at the end: epochs 0, 0.5, 1.
    assert r["epochs"] == [0.0, 0.5, 1.0]
    assert r["peak_lambda_max"] == max(r["lambda_max"]) > 0
    assert r["lambda_max"][r["epochs"].index(r["peak_epoch"])] == r["peak_lambda_max"]
    assert r["late_mean_lambda_max"] == r["lambda_max"][-1]  # a quarter of 3: the last
    assert all(len(t) == 2 and t[0] >= t[1] for t in r["top_eigenvalues"])
    assert 0 <= r["test_accuracy"] <= 1
  # Same initialization: every run starts from the same lambda_max.
  assert len({round(r["initial_lambda_max"], 6) for r in rows}) == 1
  assert "| batch size | 0.05 | 50 |" in proc.stdout
  # Started again, the finished runs are reused, not retrained.
  again = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
  assert again.returncode == 0 and again.stderr.count("reusing the finished run") == 4
  # Too few steps per epoch for the measurements asked for: a clear error.
  bad = subprocess.run(args[:2] + ["--batch_sizes=100", "--measures_per_epoch=2",
                                   "--train_size=100", f"--out={out}_bad"],
                       capture_output=True, text=True, timeout=300, env=env)
  assert bad.returncode != 0 and "--measures_per_epoch" in bad.stderr
