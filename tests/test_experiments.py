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
