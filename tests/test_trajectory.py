"""tf_sharpness.trajectory and scripts/trajectory_report.py on hand-made runs."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from tf_sharpness import trajectory

THRESHOLDS = {"2/η": 20.0}


def _records():
  """Steps 0..8, lambda_max measured every 2 steps; 4 steps per epoch."""
  tops = {0: 1.0, 2: 5.0, 4: 9.0, 6: 4.0, 8: 3.0}
  losses = {0: 2.3, 2: None, 4: 1.4, 6: 1.2, 8: 1.0}
  out = []
  for step in range(9):
    r = {"step": step, "epoch": step / 4, "loss": 2.0}
    if step in tops:
      r.update(top_eigenvalues=[tops[step], 0.5], stability_thresholds=THRESHOLDS)
      if losses[step] is not None:
        r["train_loss"] = losses[step]
    out.append(r)
  out[-1].update(final=True, test_accuracy=0.25)
  return out


def test_summary_of_a_hand_made_trajectory():
  s = trajectory.summarize(_records(), steps_per_epoch=4, loss_threshold=1.5)
  assert s["steps"] == [0, 2, 4, 6, 8]
  assert s["epochs"] == [0, 0.5, 1.0, 1.5, 2.0]
  assert s["lambda_max"] == [1, 5, 9, 4, 3]  # the top eigenvalue, not the second
  assert s["train_loss"] == [2.3, None, 1.4, 1.2, 1.0]
  assert (s["initial_lambda_max"], s["peak_lambda_max"], s["peak_step"], s["peak_epoch"]) == (
      1, 9, 4, 1.0)
  assert s["peaked"] is True
  assert s["late_mean_lambda_max"] == 3.0  # last floor(5/4) = 1 measurement
  # The first measurement at loss <= 1.5 (the step without a loss is skipped).
  assert (s["step_at_loss_threshold"], s["lambda_max_at_loss_threshold"]) == (4, 9.0)
  assert (s["final_train_loss"], s["test_accuracy"], s["diverged"]) == (1.0, 0.25, False)


def test_summary_edges():
  records = _records()
  unknown = trajectory.summarize(records, None, 1.5)  # epochs unknown: steps only
  assert unknown["epochs"] is None and unknown["peak_epoch"] is None
  assert unknown["peak_step"] == 4
  never = trajectory.summarize(records, 4, loss_threshold=0.5)
  assert never["step_at_loss_threshold"] is None
  assert never["lambda_max_at_loss_threshold"] is None
  records[8]["top_eigenvalues"] = [12.0]  # still climbing at the end
  climbing = trajectory.summarize(records, 4, 1.5)
  assert climbing["peaked"] is False and climbing["peak_epoch"] == 2.0
  # A diverged run ends with a record of its own, without a measurement.
  records.append({"step": 9, "epoch": 2.25, "loss": None, "diverged": True})
  diverged = trajectory.summarize(records, 4, 1.5)
  assert diverged["diverged"] is True and diverged["test_accuracy"] is None
  assert diverged["final_train_loss"] == 1.0 and diverged["steps"][-1] == 8
  # The late window is the last floor(n/4) of n measurements, at least one.
  for n, late in ((3, 2.0), (7, 6.0), (8, 6.5)):
    run = [{"step": i, "top_eigenvalues": [float(i)]} for i in range(n)]
    assert trajectory.summarize(run, 1, 1.0)["late_mean_lambda_max"] == late, n
  # "At loss L" is the first measurement with loss <= L, equality included.
  at = trajectory.summarize(_records(), 4, loss_threshold=1.4)
  assert (at["step_at_loss_threshold"], at["lambda_max_at_loss_threshold"]) == (4, 9.0)
  # Peaked: the maximum comes before the late window (here the last 2 of 8).
  for tops, peaked in (([1, 2, 3, 4, 5, 9, 8, 7], True), ([1, 2, 3, 4, 5, 6, 9, 8], False)):
    run = [{"step": i, "top_eigenvalues": [float(t)]} for i, t in enumerate(tops)]
    assert trajectory.summarize(run, 1, 1.0)["peaked"] is peaked, tops
  # Equal maxima: the first one is the peak.
  flat = [{"step": i, "top_eigenvalues": [t]} for i, t in enumerate([1.0, 3.0, 3.0, 2.0])]
  assert trajectory.summarize(flat, 1, 1.0)["peak_epoch"] == 1.0
  with pytest.raises(ValueError, match="spectrum_every"):
    trajectory.summarize([{"step": 0, "loss": 1.0}], 1, 1.0)


def test_by_loss_levels_and_bands_of_a_hand_made_trajectory():
  s = trajectory.summarize(_records(), 4, 1.5)  # losses 2.3, -, 1.4, 1.2, 1.0
  b = trajectory.by_loss(s, [2.5, 1.3, 1.0, 0.5])  # lambda_max 1, 5, 9, 4, 3
  assert b["at_level"] == [1.0, 4.0, 3.0, None]  # first loss <= L; never <= 0.5
  assert b["step_at_level"] == [0, 6, 8, None]
  # (1.3, 2.5]: losses 2.3 and 1.4 (the step without a loss is left out).
  assert b["band_mean"] == [5.0, 4.0, 3.0] and b["band_count"] == [2, 1, 1]
  empty = trajectory.by_loss(s, [2.5, 2.4, 1.0])  # nothing in (2.4, 2.5]
  assert empty["band_count"] == [0, 3]  # (1.0, 2.4]: 2.3, 1.4, 1.2, not 1.0
  assert empty["band_mean"] == [None, pytest.approx((1 + 9 + 4) / 3)]
  for bad in ([1.0, 1.5], [1.0, 1.0]):
    with pytest.raises(ValueError, match="decrease strictly"):
      trajectory.by_loss(s, bad)


def _report(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "trajectory_report.py"), *args],
      capture_output=True, text=True, timeout=300, env=env)


def test_trajectory_report_prints_the_table_summary_and_plot(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  with open(run / "metrics.jsonl", "w") as f:
    for r in _records():
      f.write(json.dumps(r) + "\n")
  proc = _report(f"--logdir={run}", "--loss_threshold=1.5",
                 f"--plot={tmp_path / 'p.png'}", f"--json={tmp_path / 's.json'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| epoch | step | train loss | lambda_max | 2/η | test accuracy |" in proc.stdout
  assert "| 1.00 | 4 | 1.400 | 9.0 | 20.0 | — |" in proc.stdout
  assert "| 0.50 | 2 | — | 5.0 | 20.0 | — |" in proc.stdout
  assert "| 2.00 | 8 | 1.000 | 3.0 | 20.0 | 0.250 |" in proc.stdout
  rows = [l for l in proc.stdout.splitlines() if l.startswith("| ")]
  assert len(rows) == 2 + 5  # header, rule, one row per measurement
  assert "peak 9.0 at epoch 1.00 (below it for the last quarter of the run)" in proc.stdout
  assert "at training loss 1.5: 9.0 at step 4" in proc.stdout
  saved = json.load(open(tmp_path / "s.json"))
  assert saved["peak_lambda_max"] == 9.0 and saved["stability_thresholds"] == THRESHOLDS
  assert os.path.getsize(tmp_path / "p.png") > 0


def test_trajectory_report_of_a_run_just_started(tmp_path):
  """Only step 0 logged, without a training loss: steps, not epochs."""
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 0, "epoch": 0.0, "top_eigenvalues": [7.0]}) + "\n")
  proc = _report(f"--logdir={tmp_path}", f"--plot={tmp_path / 'p.png'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| — | 0 | — | 7.0 | — |" in proc.stdout
  assert "peak 7.0 at step 0" in proc.stdout
  assert "the training loss was never measured (train with --eval_every > 0)" in proc.stdout
  assert os.path.exists(tmp_path / "p.png")


def test_trajectory_report_names_the_flag_on_bad_input(tmp_path):
  proc = _report(f"--logdir={tmp_path}")
  assert proc.returncode != 0 and "--logdir" in proc.stderr and "metrics.jsonl" in proc.stderr
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 0, "epoch": 0.0, "loss": 2.0}) + "\n")
  proc = _report(f"--logdir={tmp_path}")
  assert proc.returncode != 0 and "--spectrum_every" in proc.stderr
  proc = _report(f"--logdir={tmp_path}", f"--plot={tmp_path / 'no' / 'p.png'}")
  assert proc.returncode != 0 and "--plot=" in proc.stderr and "does not exist" in proc.stderr
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write("{broken\n" + json.dumps({"step": 0, "top_eigenvalues": [1.0]}) + "\n")
  proc = _report(f"--logdir={tmp_path}")
  assert proc.returncode != 0 and "--logdir=" in proc.stderr and "not JSON" in proc.stderr


def test_paired_ratio_uses_only_the_seeds_both_settings_have():
  values = {0: 6.0, 1: 9.0, 2: None, 3: 4.0}
  reference = {0: 3.0, 1: 3.0, 2: 5.0}  # seed 3 has no reference run
  ratio, per_seed = trajectory.paired_ratio(values, reference)
  assert ratio == pytest.approx((6 + 9) / (3 + 3))  # not mean(6, 9, 4) / mean(3, 3, 5)
  assert per_seed == pytest.approx([2.0, 3.0])
  assert trajectory.paired_ratio({0: 1.0}, {0: 0.0}) is None
  assert trajectory.paired_ratio({0: None}, {0: 2.0}) is None
