"""tf_sharpness.reports.trajectory and scripts/report.py on hand-made runs."""

import json
import os

import numpy as np
import pytest

from conftest import run_cli
from tf_sharpness.reports import trajectory

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


def test_window_statistics_of_a_hand_made_trajectory():
  s = trajectory.summarize(_records(), 4, 1.5)  # epochs 0, .5, 1, 1.5, 2; lambda 1, 5, 9, 4, 3
  s["matvecs"] = [None, 4, 6, 8, None]
  w = trajectory.window(s, 0.5, 1.5, {"2/η": 4.5, "low": 0.0})  # both ends included
  assert (w["count"], w["mean"], w["min"], w["max"]) == (3, 6.0, 4.0, 9.0)
  assert w["above"] == {"2/η": 2, "low": 3}  # 5 and 9 are above 4.5; 4.5 itself would not be
  assert w["slope"] == pytest.approx(-1.0)  # (-0.5)(-1) + 0 + (0.5)(-2) over 0.5
  assert w["mean_train_loss"] == pytest.approx(1.3)  # epoch 0.5 has no loss
  assert (w["min_train_loss"], w["max_train_loss"]) == (1.2, 1.4)
  assert w["mean_matvecs"] == 6.0
  # A straight line has its own slope; noisy data the slope of numpy's fit.
  rng = np.random.default_rng(0)
  x = np.arange(20.0)
  for y in (3 * x + 1, rng.normal(size=20) + 0.5 * x):
    line = {"steps": list(range(20)), "epochs": list(x), "lambda_max": list(y),
            "train_loss": [None] * 20}
    assert trajectory.window(line, 0, 19, {})["slope"] == pytest.approx(np.polyfit(x, y, 1)[0])
    assert trajectory.window(line, 0, 19, {})["mean_matvecs"] is None  # not recorded
  one = trajectory.window(s, 1.0, 1.0, {"2/η": 4.5})
  assert one["count"] == 1 and one["slope"] is None and one["above"] == {"2/η": 1}
  empty = trajectory.window(s, 2.5, 3.0, {"2/η": 4.5})
  assert empty["count"] == 0 and empty["mean"] is None and empty["above"] == {"2/η": 0}
  assert empty["min_train_loss"] is None and empty["mean_train_loss"] is None
  steps_only = trajectory.summarize(_records(), None, 1.5)  # windows in steps
  assert trajectory.window(steps_only, 2, 6, {})["mean"] == 6.0
  with pytest.raises(ValueError, match="start before it ends"):
    trajectory.window(s, 2, 1, {})


def test_first_crossing_and_the_difference_between_two_runs():
  s = trajectory.summarize(_records(), 4, 1.5)  # lambda 1, 5, 9, 4, 3
  assert trajectory.first_at_or_above(s, 5.0) == 0.5  # equality counts
  assert trajectory.first_at_or_above(s, 9.5) is None
  assert trajectory.first_at_or_above(trajectory.summarize(_records(), None, 1.5), 6) == 4
  # The rerun measured steps 4..12; they share 4, 6, 8, with differences 10%, 25%, 0%.
  rerun = {"steps": [4, 6, 8, 10, 12], "lambda_max": [9.9, 5.0, 3.0, 1.0, 100.0]}
  d = trajectory.largest_difference(rerun, s)
  assert d["shared"] == 3 and d["step"] == 6 and d["relative"] == pytest.approx(0.25)
  assert (d["value"], d["reference"]) == (5.0, 4.0)
  assert trajectory.largest_difference({"steps": [1], "lambda_max": [2.0]}, s) is None


def test_seconds_per_epoch_from_wall_times():
  s = trajectory.summarize(_records(), 4, 1.5)  # measurements at steps 0, 2, 4, 6, 8
  wall = {0: (0, 100.0), 2: (0, 130.0), 4: (0, 160.0), 6: (1, 900.0), 8: (1, 960.0)}
  assert trajectory.seconds_per_unit(s, 0, 1, wall) == pytest.approx(60.0)  # 60 s over 1 epoch
  assert trajectory.seconds_per_unit(s, 1.5, 2, wall) == pytest.approx(120.0)
  assert trajectory.seconds_per_unit(s, 0, 2, wall) is None  # a resume in between
  assert trajectory.seconds_per_unit(s, 1, 1, wall) is None  # one measurement
  assert trajectory.seconds_per_unit(s, 0, 1, {0: (0, 1.0)}) is None  # an end not in the events
  steps_only = trajectory.summarize(_records(), None, 1.5)
  assert trajectory.seconds_per_unit(steps_only, 0, 4, wall) == pytest.approx(15.0)


def test_event_wall_times_of_two_processes(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_sharpness import rundir  # pylint: disable=g-import-not-at-top
  for steps in ((0, 1, 2), (2, 3)):  # the second "process" resumed at step 2
    writer = tf.summary.create_file_writer(str(tmp_path), filename_suffix=f".{steps[0]}")
    with writer.as_default():
      for step in steps:
        tf.summary.scalar("a", 1.0, step=step)
        tf.summary.scalar("b", 2.0, step=step)
    writer.close()
  wall = rundir.event_wall_times(str(tmp_path))
  assert sorted(wall) == [0, 1, 2, 3]
  assert [wall[k][0] for k in (0, 1, 2, 3)] == [0, 0, 1, 1]  # step 2: the later file
  assert wall[0][1] <= wall[1][1] <= wall[2][1] <= wall[3][1]
  # Files are ordered by when they started, not by name; a half-written
  # last record (a killed process) is skipped.
  names = sorted(p for p in os.listdir(tmp_path) if "tfevents" in p)
  first, second = (str(tmp_path / n) for n in names)
  os.rename(first, str(tmp_path / "events.out.tfevents.9.zzz"))
  with open(second, "ab") as f:
    f.write(b"\x10\x00\x00")
  assert rundir.event_wall_times(str(tmp_path)) == wall


def test_report_list_flags_parse_and_serialize():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tf_sharpness.cli import flags as tf_flags  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  tf_flags.define_list("windows", "windows", "", flag_values=values)
  tf_flags.define_list("loss_levels", "levels", "", flag_values=values)
  values(["prog"])
  assert values.windows == [] and values.levels == []  # the default
  values(["prog", "--windows=100:150,150:200", "--levels=1,0.5"])
  assert values.windows == [(100, 150), (150, 200)] and values.levels == [1.0, 0.5]
  assert values["windows"].serialize() == "--windows=100:150,150:200"
  values(["prog", "--windows="])
  assert values.windows == []
  for bad in ("--windows=nan:5", "--windows=2:1", "--levels=inf"):
    with pytest.raises(flags.IllegalFlagValueError, match=bad.split("=")[0]):
      values(["prog", bad])


def _run_dir(path):
  """A run directory holding the records of ``_records``."""
  path.mkdir()
  with open(path / "metrics.jsonl", "w") as f:
    for r in _records():
      f.write(json.dumps(r) + "\n")
  return path


def _report(*args):
  return run_cli("report", *args)


def test_trajectory_report_prints_the_table_summary_and_plot(tmp_path):
  run = _run_dir(tmp_path / "run")
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


def test_trajectory_report_windows_crossings_and_comparison(tmp_path):
  run = _run_dir(tmp_path / "run")
  earlier = tmp_path / "earlier.json"
  earlier.write_text(json.dumps({"steps": [0, 2, 4], "lambda_max": [1.0, 4.0, 9.0]}))
  proc = _report(f"--logdir={run}", "--windows=0.5:1.5,1.5:2", "--loss_levels=1.3,0.5",
                 f"--compare={earlier}", f"--json={tmp_path / 's.json'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert ("| epochs | measurements | mean lambda_max | range | above 2/η = 20 | "
          "slope per epoch | train loss: mean (range) | HVPs per measurement | seconds per epoch |"
          ) in proc.stdout
  # No event files here, so no pace.
  assert ("| 0.5–1.5 | 3 | 6.0 | 4.0–9.0 | 0 | -1.00 | 1.300 (1.200–1.400) | — | — |"
          in proc.stdout)
  assert ("| 1.5–2 | 2 | 3.5 | 3.0–4.0 | 0 | -2.00 | 1.100 (1.000–1.200) | — | — |"
          in proc.stdout)
  assert "lambda_max first >= 2/η = 20: never" in proc.stdout
  assert "training loss first <= 1.3: at epoch 1.5" in proc.stdout
  assert "training loss first <= 0.5: never" in proc.stdout
  assert "at most 25.00% (step 2: 5.0 here, 4.0 there)" in proc.stdout
  assert json.load(open(tmp_path / "s.json"))["windows"][0]["mean"] == 6.0
  # --from_json reports the JSON just written: the same summary and windows.
  again = _report(f"--from_json={tmp_path / 's.json'}", "--windows=0.5:1.5",
                  f"--json={tmp_path / 't.json'}", f"--plot={tmp_path / 't.png'}")
  assert again.returncode == 0, again.stderr[-3000:]
  summary = lambda text: next(l for l in text.splitlines() if l.startswith("lambda_max: start"))
  assert summary(again.stdout) == summary(proc.stdout)
  assert "| 0.5–1.5 | 3 | 6.0 | 4.0–9.0 | 0 | -1.00 | 1.300 (1.200–1.400) |" in again.stdout
  table = lambda text: [l for l in text.splitlines() if l.startswith("| ") and "–" not in l]
  assert table(again.stdout) == table(proc.stdout)  # the same rows from the JSON
  # It summarizes again with this --loss_threshold.
  other = _report(f"--from_json={tmp_path / 's.json'}", "--loss_threshold=1.2")
  assert other.returncode == 0 and "at training loss 1.2: 4.0 at step 6" in other.stdout
  resaved = json.load(open(tmp_path / "t.json"))
  assert resaved["lambda_max"] == [1, 5, 9, 4, 3] and resaved["logdir"] == str(run)
  assert os.path.getsize(tmp_path / "t.png") > 0
  for args, message in (((f"--from_json={tmp_path / 's.json'}", f"--logdir={run}"), "one of"),
                        ((), "one of"),
                        ((f"--from_json={tmp_path / 's.json'}", "--until_epoch=1"),
                         "--until_epoch"),
                        ((f"--from_json={earlier}",), "--from_json=")):
    bad = _report(*args)
    assert bad.returncode != 0 and message in bad.stderr, args
  # --until_epoch reads the start of the run only: its peak, end and crossing.
  proc = _report(f"--logdir={run}", "--until_epoch=0.5")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "peak 5.0 at epoch 0.50" in proc.stdout
  rows = [l for l in proc.stdout.splitlines() if l.startswith("| ")]
  assert len(rows) == 2 + 2
  for flag, message in (("--windows=2:1", "A:B with A <= B"), ("--windows=1", "A:B"),
                        ("--windows=a:b", "A:B"), ("--loss_levels=0.5,1.0", "decrease"),
                        ("--loss_levels=x", "decrease"), ("--until_epoch=-1", "no lambda_max"),
                        (f"--compare={tmp_path}/none.json", "cannot read"),
                        (f"--compare={run}/metrics.jsonl", "cannot read")):
    proc = _report(f"--logdir={run}", flag)
    assert proc.returncode != 0 and flag in proc.stderr and message in proc.stderr, flag
  (tmp_path / "list.json").write_text("[]")  # a sweep without this run
  proc = _report(f"--logdir={run}", f"--compare={tmp_path}/list.json")
  assert proc.returncode != 0 and "no run 'run' in this sweep" in proc.stderr
  (tmp_path / "dict.json").write_text("{}")
  proc = _report(f"--logdir={run}", f"--compare={tmp_path}/dict.json")
  assert proc.returncode != 0 and "needs 'steps'" in proc.stderr


def test_trajectory_report_compares_with_its_run_in_a_sweep_json(tmp_path):
  run = _run_dir(tmp_path / "lr0.1_b128_seed1")  # the driver's folder name: RUN_seedS
  sweep = [{"run": "lr0.1_b128", "runs": [
      {"seed": 0, "steps": [0, 2], "lambda_max": [100.0, 100.0]},
      {"seed": 1, "steps": [0, 2, 4], "lambda_max": [1.0, 4.0, 10.0]}]}]
  (tmp_path / "sweep.json").write_text(json.dumps(sweep))
  proc = _report(f"--logdir={run}", f"--compare={tmp_path / 'sweep.json'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Seed 1's run, not seed 0's: 5 vs 4 at step 2 is the largest, 25%.
  assert "over the 3 steps both measured" in proc.stdout
  assert "at most 25.00% (step 2: 5.0 here, 4.0 there)" in proc.stdout
  sweep[0]["runs"].pop()
  (tmp_path / "sweep.json").write_text(json.dumps(sweep))
  proc = _report(f"--logdir={run}", f"--compare={tmp_path / 'sweep.json'}")
  assert proc.returncode != 0 and "no run 'lr0.1_b128_seed1'" in proc.stderr
  assert "lr0.1_b128_seed0" in proc.stderr


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
  assert proc.returncode != 0 and "--logdir=" in proc.stderr and "spectrum_every" in proc.stderr
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
