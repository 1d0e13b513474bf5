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
