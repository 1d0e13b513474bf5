"""scripts/eos_report.py on a hand-made eos.py --json."""

import json

from conftest import run_cli


def _runs():
  return [
      {"run": "lr0.1", "learning_rate": 0.1, "momentum": 0.0, "diverged": False,
       "steps": [0, 10, 20, 30, 40], "sharpness": [30.0, 12.0, 15.0, 21.0, 20.0],
       "loss": [[0, 1.0], [10, 0.5], [20, 0.6], [30, 0.01], [39, 0.0005]]},
      {"run": "lr0.1_beta0.5", "learning_rate": 0.1, "momentum": 0.5, "diverged": False,
       "steps": [0, 20], "sharpness": [30.0, 24.0], "loss": [[0, 1.0], [19, 0.2]]},
      {"run": "lr1", "learning_rate": 1.0, "momentum": 0.0, "diverged": True,
       "steps": [0], "sharpness": [30.0], "loss": [[0, 1.0]]}]


def _report(tmp_path, *args, runs=None):
  path = tmp_path / "eos.json"
  path.write_text(json.dumps(_runs() if runs is None else runs))
  return run_cli("eos_report", f"--json={path}", *args)


def test_runs_at_steps_and_windows(tmp_path):
  proc = _report(tmp_path, "--at_steps=15,40", "--windows=10:30")
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  # 2/eta = 20; smallest after the first is 12 at step 10; at step 15 the
  # measurement and the loss of step 10 (which it says); at 40 the last
  # measurement and the loss logged at step 39; the last is 20 = 2/eta; the
  # loss rises once (0.5 -> 0.6); it is below 1e-3 first at step 39.
  assert ("| lr0.1 | 20.0 | 20.0 | 30.0 | 12.0 (step 10) | 12.0 | 0.5 (step 10) | 20.0 | "
          "0.0005 (step 39) | 20.0 (step 40) | 1.000 | 1.000 | 0.0005 (step 39) | 1 | 39 |"
          ) in out
  # With beta = 0.5 the threshold is 30; the run ended at step 20, before 40.
  assert ("| lr0.1_beta0.5 | 20.0 | 30.0 | 30.0 | 24.0 (step 20) | 30.0 | 1 (step 0) | — | — | "
          "24.0 (step 20) | 1.200 | 0.800 | 0.2 (step 19) | 0 | never |") in out
  assert "| lr1 | 2.0 | 2.0 | 30.0 | diverged (last measurement at step 0) |" in out
  # Steps 10-30 of lr0.1: 12, 15, 21; one above 20; slope 9/20; +75%.
  assert "| lr0.1 | 10–30 | 3 | 16.0 | 12.0–21.0 | 1 | 1 | 0.45 | +75.00% |" in out
  assert "| lr0.1_beta0.5 | 10–30 | 1 | 24.0 | 24.0–24.0 | 0 | 1 | — | — |" in out


def test_bad_input_names_the_flag(tmp_path):
  for flag, message in (("--at_steps=-5", "whole steps"), ("--at_steps=x", "whole steps"),
                        ("--windows=5", "A:B"), ("--windows=nan:5", "A:B")):
    proc = _report(tmp_path, flag)
    assert proc.returncode != 0 and flag in proc.stderr and message in proc.stderr, flag
  proc = _report(tmp_path, runs={"run": "x"})
  assert proc.returncode != 0 and "not a --json of eos.py" in proc.stderr
