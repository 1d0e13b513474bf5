"""scripts/sweep_report.py on a hand-made sweep JSON (the shape that
tf-sharpness sweep --json writes)."""

import json

from conftest import run_cli
from tf_sharpness.reports import trajectory


def _run(seed, tops, losses):
  records = [{"step": 10 * i, "top_eigenvalues": [t], "train_loss": l}
             for i, (t, l) in enumerate(zip(tops, losses))]
  records[-1]["test_accuracy"] = 0.5 + seed / 10
  return {"seed": seed, **trajectory.summarize(records, 10, 1.5)}


def _sweep():
  """Two settings of two seeds; epochs 0..4, lambda_max and loss given."""
  return [
      {"sweep": "learning rate", "run": "lr0.1_b128", "learning_rate": 0.1, "batch_size": 128,
       "runs": [_run(0, [1, 5, 30, 4, 3], [2.3, 1.9, 1.4, 1.2, 1.0]),
                _run(1, [2, 3, 4, 6, 8], [2.2, 2.1, 2.0, 1.8, 1.6])]},
      {"sweep": "learning rate", "run": "lr0.01_b128", "learning_rate": 0.01,
       "batch_size": 128,
       "runs": [_run(0, [1, 2, 3, 4, 5], [2.3, 2.0, 1.5, 1.1, 0.9]),
                _run(1, [1, 2, 2, 2, 2], [2.3, 2.2, 2.1, 2.0, 1.9])]}]


def _report(tmp_path, *args, sweep=None):
  path = tmp_path / "sweep.json"
  path.write_text(json.dumps(_sweep() if sweep is None else sweep))
  return run_cli("sweep_report", f"--json={path}", *args)


def test_one_row_per_seed_with_levels_and_windows(tmp_path):
  proc = _report(tmp_path, "--loss_levels=2.0,1.5", "--windows=1:3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert ("| run | eta | B | seed | start | largest lambda_max | at | peaked | late mean | "
          "final train loss | test accuracy | diverged | first loss <= 2: at (loss, lambda_max) | "
          "first loss <= 1.5: at (loss, lambda_max) |") in out
  # Seed 0 of eta = 0.1 peaks at epoch 2 (30 > 2/eta = 20) and comes down:
  # peaked; loss 1.9 at epoch 1, 1.4 at epoch 2.
  assert ("| lr0.1_b128 | 0.1 | 128 | 0 | 1.0 | 30.0 | epoch 2 | yes | 3.0 | 1.000 | 0.500 |"
          " no | 1 (1.900, 5.0) | 2 (1.400, 30.0) |") in out
  assert ("| lr0.1_b128 | 0.1 | 128 | 1 | 2.0 | 8.0 | epoch 4 | no | 8.0 | 1.600 | 0.600 |"
          " no | 2 (2.000, 4.0) | never |") in out
  assert "| lr0.01_b128 | 0.01 | 128 | 1 | 1.0 | 2.0 | epoch 1 | yes |" in out
  # Epochs 1-3 of seed 0 at eta = 0.1: 5, 30, 4 (mean 13), one above 20,
  # slope (4 - 5) / 2 = -0.5, mean loss (1.9 + 1.4 + 1.2) / 3 = 1.5.
  assert "| lr0.1_b128 | 0 | epochs 1–3 | 3 | 13.0 | 4.0–30.0 | 1 | -0.5 | 1.500 |" in out
  assert "| lr0.01_b128 | 0 | epochs 1–3 | 3 | 3.0 | 2.0–4.0 | 0 | 1.00 | 1.533 |" in out
  rows = [l for l in out.splitlines() if l.startswith("| lr")]
  assert len(rows) == 4 + 4 + 4  # runs, the one band (1.5, 2], windows
  assert "| lr0.1_b128 | 1 | 6.0 (3) |" in out  # losses 2.0, 1.8, 1.6: 2.0 is in, 2.1 not


def test_bands_measurements_and_steps(tmp_path):
  proc = _report(tmp_path, "--runs=lr0.1_b128", "--loss_levels=2.5,2.0,1.5", "--in_steps",
                 "--windows=10:30", "--measurements")
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  # Bands (2, 2.5] and (1.5, 2]: seed 0 has losses 2.3 | 1.9 (lambda 1 | 5),
  # seed 1 has 2.2, 2.1 | 2.0, 1.8, 1.6 (lambda 2, 3 | 4, 6, 8).
  assert "| lr0.1_b128 | 0 | 1.0 (1) | 5.0 (1) |" in out
  assert "| lr0.1_b128 | 1 | 2.5 (2) | 6.0 (3) |" in out
  # In steps: the peak of seed 0 at step 20, the window over steps 10-30.
  assert "| 30.0 | step 20 | yes |" in out
  assert "| lr0.1_b128 | 0 | steps 10–30 | 3 | 13.0 | 4.0–30.0 | 1 | -0.05 | 1.500 |" in out
  assert "| run | seed | epoch or step | train loss | lambda_max |" in out
  assert "| lr0.1_b128 | 1 | step 40 | 1.600 | 8.0 |" in out
  assert len([l for l in out.splitlines() if l.startswith("| lr0.1_b128 | ")]) == 2 + 2 + 2 + 10


def test_a_diverged_run_and_a_run_without_epochs(tmp_path):
  sweep = _sweep()
  sweep[0]["runs"][1]["diverged"] = True
  sweep[1]["runs"] = [{**r, "epochs": None, "peak_epoch": None} for r in sweep[1]["runs"]]
  proc = _report(tmp_path, "--windows=10:20", "--loss_levels=2.0", sweep=sweep)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| lr0.1_b128 | 0.1 | 128 | 1 | 2.0 | 8.0 | epoch 4 | no | 8.0 | 1.600 | 0.600 | yes |" \
      in proc.stdout
  # Without epochs the run counts in steps: peak, level and window.
  assert "| lr0.01_b128 | 0.01 | 128 | 0 | 1.0 | 5.0 | step 40 | no |" in proc.stdout
  assert "| 10 (2.000, 2.0) |" in proc.stdout
  assert "| lr0.01_b128 | 0 | steps 10–20 | 2 | 2.5 |" in proc.stdout


def test_only_the_runs_asked_for_and_clear_errors(tmp_path):
  proc = _report(tmp_path, "--runs=lr0.01_b128")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| lr0.01_b128 |" in proc.stdout and "| lr0.1_b128 |" not in proc.stdout
  for flag, message in (("--runs=lr9_b1", "no setting lr9_b1"), ("--windows=3:1", "A <= B"),
                        ("--loss_levels=1,2", "decrease strictly")):
    proc = _report(tmp_path, flag)
    assert proc.returncode != 0 and flag in proc.stderr and message in proc.stderr, flag
  proc = _report(tmp_path, sweep={"runs": []})
  assert proc.returncode != 0 and "not a --json of tf-sharpness sweep" in proc.stderr


def test_equal_loss_ratios_carry_their_interval_over_seeds():
  """The equal-loss table's ratio to the first setting: ratio of means,
  the per-seed range, and the 95% interval of the geometric mean of the
  per-seed ratios (exp(mean log r +- t_{0.975,2} s / sqrt 3)), starred
  only when it excludes 1."""
  import numpy as np
  from tf_sharpness.experiments import sweep
  def setting(values):
    return {"runs": [{"seed": s, "by_loss": {"at_level": [v]}} for s, v in enumerate(values)]}
  ref = setting([10.0, 20.0, 40.0])
  clear = sweep.ratio_cell(setting([20.0, 42.0, 76.0]), ref, "at_level", 0)
  logs = np.log([2.0, 2.1, 1.9])
  half = 4.302653 * logs.std(ddof=1) / np.sqrt(3)
  low, high = np.exp(logs.mean() - half), np.exp(logs.mean() + half)
  assert clear == f"{138 / 70:.2f} (1.90–2.10) [{low:.2f}, {high:.2f}] *"
  noisy = sweep.ratio_cell(setting([5.0, 40.0, 60.0]), ref, "at_level", 0)
  assert noisy.startswith("1.50 (0.50–2.00) [")
  assert "*" not in noisy and "[" in noisy
  assert sweep.ratio_cell(setting([None, None, None]), ref, "at_level", 0) == "—"


def test_the_figure_band_goes_on_over_the_seeds_left_after_one_diverged():
  """A run that diverged stops early: the mean and band go on over the
  other seeds (not cut at the shortest run), and the legend says so."""
  from tf_sharpness.experiments import sweep as sweep_module
  setting = _sweep()[0]
  short = _run(1, [2, 3, 4], [2.2, 2.1, 2.0])
  short["diverged"] = True
  setting["runs"][1] = short
  x, mean, low, high = sweep_module.band(setting["runs"], "epochs", "lambda_max")
  assert list(x) == [0, 1, 2, 3, 4]
  assert list(mean) == [1.5, 4.0, 17.0, 4.0, 3.0]
  assert list(low) == [1, 3, 4, 4, 3] and list(high) == [2, 5, 30, 4, 3]
  assert sweep_module.setting_label(setting) == "η = 0.1 (2 seeds; 1 diverged)"
  assert sweep_module.setting_label(_sweep()[1]) == "η = 0.01 (2 seeds)"
