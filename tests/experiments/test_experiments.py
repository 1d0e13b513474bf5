"""The experiment drivers on tiny settings (the full runs live in docs/results.md)."""

import dataclasses
import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from tf_sharpness.reports import trajectory


def test_edge_of_stability_driver(tmp_path):
  out = str(tmp_path / "eos")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "eos.py"),
       "--learning_rates=0.05", "--momentum_runs=0.05:0.5", "--steps=4",
       "--train_size=50", "--spectrum_every=2", f"--out={out}",
       f"--json={tmp_path / 'eos.json'}"],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = json.load(open(tmp_path / "eos.json"))  # --json, not OUT/eos.json
  assert saved["experiment"] == "eos" and saved["settings"]["learning_rates"] == [0.05]
  results = saved["runs"]
  assert [r["run"] for r in results] == ["lr0.05", "lr0.05_beta0.5"]
  assert results[0]["threshold"] == pytest.approx(40.0)
  assert results[1]["threshold"] == pytest.approx(60.0)
  for r in results:
    assert r["steps"] == [0, 2, 4]
    late = r["sharpness"][-1:]  # late fraction 0.2 of 3 measurements: the last
    assert r["late_ratio"] == pytest.approx(sum(late) / len(late) / r["threshold"])
  assert "ratio" in proc.stdout
  # eos_report.py reads what the driver wrote.
  report = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "eos_report.py"),
       f"--json={tmp_path / 'eos.json'}", "--at_steps=2", "--windows=0:4"],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert report.returncode == 0, report.stderr[-3000:]
  row = next(l for l in report.stdout.splitlines() if l.startswith("| lr0.05_beta0.5 | 40.0 | 60.0 |"))
  assert f"| {results[1]['sharpness'][1]:.1f} |" in row  # lambda_max at step 2


def _phase(out, *extra):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "phase.py"),
       "--depths=1,2", "--widths=8,16", "--train_size=64", "--batch_size=32",
       "--hessian_size=32", "--steps=2", "--coarse_dx=1.5", "--dx=0.75", "--x_max=6",
       "--workers=2", f"--out={out}", *extra],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _phase_module():
  """The phase diagram's definitions (tf_sharpness.experiments.phase)."""
  from tf_sharpness.experiments import phase  # pylint: disable=g-import-not-at-top
  return phase


def test_phase_diagram_definitions():
  """Critical values, their brackets and the refinement on synthetic runs."""
  phase = _phase_module()
  rec = lambda x, loss, sharp, barrier, div=False: {
      "depth": 1, "width": 8, "x": x, "c": 2.0 ** x, "lambda0": 10.0, "loss0": 1.0,
      "losses": [loss], "sharpness": [sharp], "interpolation_max": barrier,
      "diverged": div}
  runs = [rec(0.0, 0.9, 9.0, 0.95), rec(1.0, 0.9, 11.0, 0.95), rec(2.0, 1.2, 12.0, 1.1),
          rec(3.0, 1.5, 13.0, 1.4), rec(4.0, 9e9, 50.0, None, div=True)]
  # Brackets: c_sharp in (0, 1], c_loss and c_barrier in (1, 2], c_max in [3, 4).
  assert phase.refinement(runs, 0.5) == [0.5, 1.5, 3.5]
  row = phase.critical_values(runs)
  assert (row["c_loss"], row["c_loss_lo"]) == (4.0, 2.0)
  assert (row["c_sharp"], row["c_sharp_lo"]) == (2.0, 1.0)
  assert (row["c_barrier"], row["c_barrier_lo"]) == (4.0, 2.0)
  assert (row["c_max"], row["c_max_hi"]) == (8.0, 16.0) and "c_max_lo" not in row
  assert [phase.phase_of(r) for r in runs] == [
      "sharpness reduction", "sharpening", "loss catapult", "loss catapult",
      "divergence"]
  # theta_0's loss evaluated again along the interpolation differs from
  # loss_0 by round-off: not a barrier.
  assert not phase.has_barrier(rec(0.0, 0.9, 9.0, 1.0 + 1e-7))
  assert phase.has_barrier(rec(0.0, 0.9, 9.0, 1.001))
  # No barrier below divergence: c_barrier is c_max (the paper's convention).
  runs[2]["interpolation_max"] = runs[3]["interpolation_max"] = 0.5
  row = phase.critical_values(runs)
  assert (row["c_barrier"], row["c_barrier_lo"]) == (8.0, None)


def test_phase_diagram_at_a_shorter_horizon():
  """A run read as if it had stopped after fewer steps: a late catapult or
  divergence is not there yet, an early one is; the interpolation (measured
  at the run's end) is unknown, so c_barrier is None."""
  phase = _phase_module()
  rec = lambda x, losses, sharp, div=False: {
      "depth": 1, "width": 8, "x": x, "c": 2.0 ** x, "lambda0": 10.0, "loss0": 1.0,
      "losses": losses, "sharpness": sharp, "interpolation_max": None if div else 0.9,
      "diverged": div, "protocol": {"divergence": 100.0, "steps": 4}}
  runs = [rec(0.0, [0.9, 0.8, 0.7, 0.6], [9.0, 8.0, 8.0, 8.0]),
          rec(1.0, [0.9, 0.8, 0.9, 1.3], [9.0, 8.0, 9.0, 11.0]),  # late catapult
          rec(2.0, [1.5, 9.0], [12.0, 30.0], div=True),  # inf at step 3
          rec(3.0, [50.0, 500.0], [40.0, 80.0], div=True)]  # over 100 x loss_0 at step 2
  assert [phase.divergence_step(r) for r in runs[2:]] == [3, 2]
  # a non-finite lambda_t at step 2 (the loss of step 2 was finite)
  assert phase.divergence_step(rec(2.5, [1.5, 9.0], [12.0], div=True)) == 2
  assert phase.at_horizon(runs[1], 4) is runs[1] and phase.at_horizon(runs[2], 3) is runs[2]
  early = phase.at_horizon(runs[2], 2)
  assert (early["losses"], early["diverged"], early["interpolation_max"]) == ([1.5, 9.0], False, None)
  full, short = phase.critical_values(runs), phase.critical_values(runs, horizon=2)
  assert (full["c_loss"], full["c_sharp"], full["c_max"]) == (2.0, 2.0, 2.0)
  assert full["c_barrier"] == 2.0  # no barrier below divergence: c_max
  assert (short["c_loss"], short["c_loss_lo"]) == (4.0, 2.0)  # the catapult at c = 2 is late
  assert (short["c_max"], short["c_max_hi"]) == (4.0, 8.0)  # so is the divergence at c = 4
  assert short["c_barrier"] is None and not phase.pinned(short, "c_barrier")
  assert phase.critical_values(runs, horizon=4) == full
  # the interpolation to theta_4 says nothing of theta_2
  assert phase.at_horizon(runs[1], 2)["interpolation_max"] is None
  assert phase.critical_values(runs[:2], horizon=2)["c_barrier"] is None
  assert phase.critical_values(runs[:2])["c_barrier"] == 2.0  # = c_max, measured
  # Crossed at the first c of a grid that starts above it: only an upper
  # bound, printed "≤" and left out of the means over seeds.
  late = phase.critical_values(runs[1:])
  assert late["c_loss"] == 2.0 and late["c_loss_lo"] is None
  assert not phase.pinned(late, "c_loss") and phase.pinned(short, "c_loss")
  assert "| ≤ 2.00 |" in phase.critical_table([late])


def test_phase_diagram_runs_table(tmp_path):
  """--runs_table lists every c of a runs.jsonl, sorted, with its phase."""
  rec = lambda x, losses, sharp, barrier, div=False: {
      "depth": 1, "width": 8, "x": x, "c": 2.0 ** x, "lambda0": 10.0, "loss0": 1.0,
      "losses": losses, "sharpness": sharp, "interpolation_max": barrier, "diverged": div}
  path = tmp_path / "runs.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in (
      rec(1.0, [0.9, 1.25], [9.0, 8.0], 1.5), rec(0.0, [0.8], [9.5], 1.0),
      rec(2.0, [9e9], [50.0], None, div=True))))
  run = lambda *a: subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "phase.py"), *a],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  proc = run(f"--runs_table={path}", "--dx=1")  # refined to dx = 1: finished
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "unfinished" not in proc.stdout
  rows = [l for l in proc.stdout.splitlines() if l.startswith("| 1 |")]
  assert rows == [
      "| 1 | 8 | 0 | 0 | 1.000 | 10.0 | 1.000 | 0.8 | — | 9.5 | 1 | sharpness reduction |",
      "| 1 | 8 | 0 | 1 | 2.000 | 10.0 | 1.000 | 1.25 | 2 | 9 | 1.5 | loss catapult |",
      "| 1 | 8 | 0 | 2 | 4.000 | 10.0 | 1.000 | — | 1 | — | — | divergence |",
      # the critical values of that (depth, width, seed) follow, with brackets
      "| 1 | 8 | 0 | 10.0 | 2.00 (1.00, 2.00] | 4.00 (2.00, 4.00] | 2.00 [2.00, 4.00) "
      "| 2.00 (1.00, 2.00] |"]
  # Not refined to dx = 0.5 (nor diverged, without the last line): unfinished,
  # left out of the critical values (the library's rule; the command above
  # prints what it decides).
  phase = _phase_module()
  records = [json.loads(l) for l in path.read_text().splitlines()]
  assert phase.finished(records, 0.5, 1.0, 6.0)
  assert not phase.finished(records, 0.5, 0.5, 6.0)  # bracket (0, 1] not refined to 0.5
  assert not phase.finished(records[:2], 0.5, 1.0, 6.0)  # no divergence below x_max
  # Without a divergence the sweep ends where the next coarse step passes
  # --x_max (x = 1 + 1 > 1.5): finished, even though x_max was not reached.
  assert phase.finished(records[:2], 1.0, 1.0, 1.5)
  part = tmp_path / "part.jsonl"
  part.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))
  proc = run(f"--runs_table={part}", "--dx=0.5")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "depth 1 width 8 seed 0: unfinished" in proc.stdout
  assert not any(l.startswith("| 1 | 8 | 0 | 10.0 |") for l in proc.stdout.splitlines())
  mixed = tmp_path / "mixed.jsonl"
  mixed.write_text("".join(json.dumps(dict(rec(0.0, [0.8], [9.5], 1.0), protocol={"steps": s}))
                           + "\n" for s in (10, 20)))
  bad = run(f"--runs_table={mixed}")
  assert bad.returncode != 0 and "2 different settings" in bad.stderr
  (tmp_path / "bad.jsonl").write_text(json.dumps({"step": 0}) + "\n")
  bad = run(f"--runs_table={tmp_path / 'bad.jsonl'}")
  assert bad.returncode != 0 and "--runs_table=" in bad.stderr


def test_phase_diagram_driver_refines_resumes_and_shards(tmp_path):
  import csv
  out = str(tmp_path / "phase")
  proc = _phase(out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = list(csv.DictReader(open(os.path.join(out, "phase.csv"))))
  assert {(r["depth"], r["width"]) for r in rows} == {("1", "8"), ("1", "16"),
                                                      ("2", "8"), ("2", "16")}
  records = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl"))]
  phase = _phase_module()
  for (d, w) in ((1, 8), (2, 16)):
    mine = sorted((r for r in records if (r["depth"], r["width"]) == (d, w)),
                  key=lambda r: r["x"])
    xs = [r["x"] for r in mine]
    assert xs[0] == 0.0 and all(round(x / 0.75, 6) == round(x / 0.75) for x in xs)
    diverged = [r["diverged"] for r in mine]  # up to the first divergence, refined
    assert diverged[-1] and diverged == sorted(diverged)
    assert phase.refinement(mine, 0.75) == []  # every bracket is refined
    row = next(r for r in rows if (int(r["depth"]), int(r["width"])) == (d, w))
    assert float(row["c_max"]) == max(r["c"] for r in mine if not r["diverged"])
    assert float(row["lambda0"]) > 0
    assert mine[0]["protocol"]["init"] == "he_normal"
  assert os.path.exists(os.path.join(out, "phase.png"))
  # Rerunning reuses every c; after losing the last lines it runs only those.
  ran = lambda proc: len(re.findall(r"width \d+ seed 0 c [\d.e+-]+: ", proc.stdout))
  again = _phase(out)
  assert again.returncode == 0 and ran(again) == 0
  lines = open(os.path.join(out, "runs.jsonl")).readlines()
  with open(os.path.join(out, "runs.jsonl"), "w") as f:
    f.writelines(lines[:-2])
  again = _phase(out)
  assert again.returncode == 0 and ran(again) == 2
  assert len(open(os.path.join(out, "runs.jsonl")).readlines()) == len(lines)
  # A shard takes every n-th configuration.
  shard = _phase(str(tmp_path / "shard"), "--shard=1/2")
  assert shard.returncode == 0, shard.stderr[-2000:]
  rows = list(csv.DictReader(open(os.path.join(str(tmp_path / "shard"), "phase.csv"))))
  assert [(r["depth"], r["width"]) for r in rows] == [("1", "16"), ("2", "16")]
  # Adding a seed in the same folder reuses seed 0's c values; one row per
  # seed, each seed's records kept apart, their mean and range printed.
  seeds = _phase(out, "--depths=1", "--widths=8", "--seeds=0,3")
  assert seeds.returncode == 0, seeds.stderr[-2000:]
  assert ran(seeds) == 0 and re.search(r"width 8 seed 3 c [\d.e+-]+: ", seeds.stdout)
  rows = list(csv.DictReader(open(os.path.join(out, "phase.csv"))))
  assert [r["seed"] for r in rows] == ["0", "3"]
  assert rows[0]["lambda0"] != rows[1]["lambda0"]
  records = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl"))
             if json.loads(l)["width"] == 8 and json.loads(l)["depth"] == 1]
  for row in rows:
    mine = [r for r in records if r["protocol"]["seed"] == int(row["seed"])]
    assert float(row["c_max"]) == max(r["c"] for r in mine if not r["diverged"])
  c_max = [float(r["c_max"]) for r in rows]
  line = next(l for l in seeds.stdout.splitlines() if l.startswith("| 1 | 8 | 2 |"))
  assert (f"| {sum(c_max) / 2:.2f} ({min(c_max):.2f}–{max(c_max):.2f}) |" in line)
  bad = _phase(str(tmp_path / "bad"), "--seeds=0,0")
  assert bad.returncode != 0 and "--seeds" in bad.stderr


def test_phase_diagram_on_a_given_grid_read_at_a_horizon(tmp_path):
  """--x_values runs exactly those c (no sweep, no refinement); --runs_table
  --horizon prints the critical values of the same runs cut at a step."""
  out = str(tmp_path / "grid")
  proc = _phase(out, "--depths=1", "--widths=8", "--steps=3", "--x_values=0,2.5,5",
                "--workers=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl"))]
  assert [r["x"] for r in records] == [0.0, 2.5, 5.0]
  assert all(len(r["losses"]) == 3 for r in records if not r["diverged"])
  phase = _phase_module()
  table = lambda *a: subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "phase.py"),
       f"--runs_table={out}/runs.jsonl", *a],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  for horizon in (1, 3):
    shown = table("--x_values=0,2.5,5", f"--horizon={horizon}")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "unfinished" not in shown.stdout
    row = phase.critical_values(records, horizon=horizon)
    # the critical values' line follows the runs' lines
    line = [l for l in shown.stdout.splitlines() if l.startswith("| 1 | 8 | 0 | ")][-1]
    cells = line.strip("| ").split(" | ")
    assert cells[4].split(" ")[0] == ("—" if row["c_loss"] is None else f"{row['c_loss']:.2f}")
    assert cells[6].split(" ")[0] == f"{row['c_max']:.2f}"
    assert (cells[7] == "—") == (horizon == 1)  # c_barrier is unknown at step 1
    # the runs' lines are cut at the horizon too: no interpolation at step 1
    runs = [l for l in shown.stdout.splitlines() if l.startswith("| 1 | 8 | 0 | ")][:-1]
    assert len(runs) == 3 and all(l.split(" | ")[-2] == "—" for l in runs) == (horizon == 1)
  assert "unfinished" in table("--x_values=0,2.5,5,6").stdout  # x = 6 was not run
  bad = table("--horizon=4")
  assert bad.returncode != 0 and "--horizon=4 is longer than the runs (--steps=3)" in bad.stderr
  bad = _phase(out, "--horizon=2")
  assert bad.returncode != 0 and "--horizon reads the runs of --runs_table" in bad.stderr


def test_phase_diagram_across_seeds(tmp_path):
  phase = _phase_module()
  def row(seed, c_loss, c_max, c_max_hi=None, barrier_lo=None, c_barrier=None):
    return {"depth": 7, "width": 256, "seed": seed, "lambda0": 10.0 * (seed + 1),
            "c_loss": c_loss, "c_loss_lo": c_loss / 2, "c_sharp": None, "c_sharp_lo": None,
            "c_max": c_max, "c_max_hi": c_max_hi, "c_barrier": c_barrier or c_max,
            "c_barrier_lo": barrier_lo}
  table = phase.across_seeds([row(0, 2.0, 8.0, 16.0), row(1, 3.0, 16.0, 32.0),
                              row(2, 4.0, 8.0, 16.0)])
  t = table[(7, 256)]
  assert t["seeds"] == [0, 1, 2] and t["lambda0"] == [10.0, 20.0, 30.0]
  assert t["c_loss"] == ([2.0, 3.0, 4.0], 3.0, 2.0, 4.0)
  assert t["c_max"][1:] == (32.0 / 3, 8.0, 16.0)
  assert t["c_sharp"] == ([], None, None, None)
  # Without a divergence c_max (and c_barrier = c_max) only bound the value:
  # left out; a barrier found below it counts.
  t = phase.across_seeds([row(0, 2.0, 8.0, 16.0), row(1, 2.0, 64.0),
                          row(2, 2.0, 64.0, None, 4.0, 5.0)])[(7, 256)]
  assert t["c_max"][0] == [8.0] and t["c_barrier"][0] == [8.0, 5.0]
  # Three equal values: the mean is exactly the value (round-off would give
  # the plot's error bars a negative length).
  c = 2.0 ** 3.9
  rows = [row(s, c, c, 16.0) for s in range(3)]
  values, mean, lo, hi = phase.across_seeds(rows)[(7, 256)]["c_loss"]
  assert mean == lo == hi == c
  assert phase.figure(rows, [], str(tmp_path / "phase.png")) == str(tmp_path / "phase.png")
  assert (tmp_path / "phase.png").stat().st_size > 0


def test_edge_of_stability_experiment_in_process(tmp_path):
  """experiments.eos.run from the shipped flagfile's base:
  thresholds 2(1+beta)/eta, the late ratio from the measured sharpness,
  reuse on a second run; bad LR:BETA items refused naming the setting."""
  from tf_sharpness.cli import flags as flags_lib
  from tf_sharpness.errors import ConfigError
  from tf_sharpness.experiments import eos
  base = flags_lib.config_from_flagfile(os.path.join(flags_lib.FLAGFILES,
                                                     "eos.cfg"))
  settings = eos.Settings(learning_rates=(0.05,), momentum_runs=("0.05:0.5",), steps=4,
                          train_size=50, spectrum_every=2, late_fraction=0.5,
                          out=str(tmp_path / "eos"))
  seen = []
  results = eos.run(settings, base, on_run=lambda r, records: seen.append(records[-1]["step"]))
  assert [r["run"] for r in results] == ["lr0.05", "lr0.05_beta0.5"] and seen == [4, 4]
  assert [r["threshold"] for r in results] == pytest.approx([40.0, 60.0])
  for r in results:
    assert r["steps"] == [0, 2, 4]
    assert r["late_ratio"] == pytest.approx(np.mean(r["sharpness"][1:]) / r["threshold"])
  assert eos.run(settings, base) == results  # reused
  assert "| lr0.05_beta0.5 | 40.0 | 60.0 |" in eos.runs_table(results, [2])
  with pytest.raises(ConfigError, match="`momentum_runs` must be LR:BETA items"):
    eos.Settings(momentum_runs=("0.1",))


def test_walk_experiment_in_process(tmp_path):
  """tf_sharpness.experiments.walk run in-process (the CLI only turns its
  generated flags into Settings): every step of both windows interpolated,
  no gradient cosine across a window's start, the tables from the rows, the
  effects paired by seed, and a second run reuses the finished runs."""
  from absl import flags as absl_flags
  from tf_sharpness.cli import flags as flags_lib
  from tf_sharpness.errors import ConfigError
  from tf_sharpness.experiments import walk
  settings = walk.Settings(learning_rates=(0.01, 0.2), batch_sizes=(10, 20), seeds=(0, 1),
                           walk_steps="1:4,6:8", train_size=100, landscape_size=40,
                           walk_points=5, model="fcn", out=str(tmp_path / "walk"))
  rows = walk.run(settings)
  assert [(r["learning_rate"], r["batch_size"], r["seed"], r["window"]) for r in rows[:4]] == [
      (0.01, 10, 0, "1:4"), (0.01, 10, 0, "6:8"), (0.01, 10, 1, "1:4"), (0.01, 10, 1, "6:8")]
  assert len(rows) == 16
  records = [r for r in walk.reuse.read_metrics(settings.config(0.2, 20, 1).logdir)
             if "walk" in r]
  assert [r["step"] for r in records] == [1, 2, 3, 6, 7]
  assert [r["walk"]["grad_cosine"] is None for r in records] == [True, False, False, True, False]
  for r in rows:
    assert r["steps"] == (3 if r["window"] == "1:4" else 2)
    assert 0 <= r["interior_minimum_fraction"] <= 1 and -1 <= r["mean_grad_cosine"] <= 1
    assert r["mean_height"] >= 0 and 0 < r["distance_start"] <= r["distance_end"] + 1e-6
  text = walk.report(rows)
  r = rows[-1]
  assert (f"| 0.2 | 20 | 1 | 6:8 | 2 | {100 * r['interior_minimum_fraction']:.1f}% |") in text
  effect = [e for e in walk.effects(rows) if e["factor"] == "eta" and e["window"] == "1:4"
            and e["low"]["batch_size"] == 10][0]
  by = {(x["learning_rate"], x["batch_size"], x["seed"], x["window"]): x for x in rows}
  expect = np.mean([by[(0.2, 10, s, "1:4")]["mean_height"] - by[(0.01, 10, s, "1:4")]["mean_height"]
                    for s in (0, 1)])
  assert effect["mean_height"]["mean"] == pytest.approx(expect) and effect["mean_height"]["n"] == 2
  assert "| 1:4 | eta 0.01 → 0.2 | B = 10 |" in text and "| 6:8 | B 10 → 20 | eta = 0.2 |" in text
  assert walk.run(settings) == rows  # reused, not trained again
  fv = absl_flags.FlagValues()
  flags_lib.define_settings_flags(walk.Settings, fv)
  fv(["walk", "--walk_steps=4:1"])
  with pytest.raises(ConfigError, match="--walk_steps needs 0 <= START < END"):
    flags_lib.settings_from_flags(walk.Settings, fv)
  with pytest.raises(ConfigError, match="windows must be increasing and apart"):
    walk.Settings(walk_steps="5:9,8:10")


def test_nsgd_table_driver(tmp_path):
  out = str(tmp_path / "nsgd")
  args = [sys.executable, os.path.join(REPO, "scripts", "nsgd.py"),
          "--gammas=0.5", "--seeds=0,1", "--target_loss=2.1", "--max_steps=8",
          "--train_size=100", "--batch_size=20", "--top_k=2", "--refresh_every=2",
          "--model=fcn", "--hessian_fraction=0.3", "--eval_size=100",
          "--learning_rate=0.05", f"--out={out}", "--sam_rhos=0.1",
          "--sgd_learning_rates=0.02", "--paired_losses=2.2",
          "--sharpness_measures=worst_l2"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = json.load(open(os.path.join(out, "nsgd_table.json")))
  assert saved["experiment"] == "nsgd"  # with the settings that made it
  assert (saved["settings"]["gammas"], saved["settings"]["target_loss"]) == ([0.5], 2.1)
  rows = saved["rows"]
  assert [r["run"] for r in rows] == ["SGD", "NSGD gamma=0.5", "SGD eta=0.02", "SAM rho=0.1"]
  # SAM and the smaller step move elsewhere than SGD from the same start and batches
  for other in rows[2:]:
    assert (other["seeds"][0]["distance_from_init"] !=
            rows[0]["seeds"][0]["distance_from_init"])
  with open(os.path.join(out, "SGD_eta0.02_seed1", "flags.txt")) as f:
    assert "--learning_rate=0.02\n" in f.read()
  for r in rows:  # the sharpness measure at the stop, per seed and as mean +- std
    values = [s["sharpness worst_l2"] for s in r["seeds"]]
    assert all(v > 0 for v in values)
    assert r["sharpness worst_l2"] == pytest.approx([np.mean(values), np.std(values, ddof=1)])
  assert "| run | lambda_max | sharpness worst_l2 | test accuracy |" in proc.stdout
  sam0 = rows[3]["seeds"][0]  # and per seed
  assert (f"| SAM rho=0.1 | 0 | {sam0['lambda_max']:.1f} | {sam0['sharpness worst_l2']:.4g} | "
          f"{sam0['test_accuracy']:.4f} |") in proc.stdout
  for r in rows:
    assert [s["seed"] for s in r["seeds"]] == [0, 1]
    for s in r["seeds"]:
      assert s["lambda_max"] > 0 and 0 <= s["test_accuracy"] <= 1
      # stopped at the first evaluation at or below the target, else at max_steps
      assert (s["train_loss"] <= 2.1) == s["reached"]
      assert s["reached"] or s["steps"] == 8
      t = s["trajectory"]  # measured every --refresh_every steps, up to the stop
      assert t["steps"] == list(range(0, s["steps"] + 1, 2))
      assert t["lambda_max"][-1] == s["lambda_max"] and t["train_loss"][-1] == s["train_loss"]
  assert any(s["reached"] for r in rows for s in r["seeds"])
  nsgd = rows[1]
  assert nsgd["projection_check_max_rel_deviation"] < 1e-4  # the projection works
  assert rows[0]["projection_check_max_rel_deviation"] is None
  ratios = [n["lambda_max"] / s["lambda_max"] for n, s in zip(nsgd["seeds"], rows[0]["seeds"])]
  assert nsgd["lambda_max_over_sgd"] == pytest.approx([np.mean(ratios), np.std(ratios, ddof=1)])
  assert rows[0]["lambda_max_over_sgd"] is None
  assert "| SGD |" in proc.stdout
  # paired with SGD where both first reached loss 2.2 and at the target
  for where in ("first at loss 2.2", "first at loss 2.1"):
    assert f"| NSGD gamma=0.5 | {where} |" in proc.stdout
  assert os.path.getsize(os.path.join(out, "nsgd_table.png")) > 0
  # Started again, it reuses the finished runs and prints the same table.
  again = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
  assert again.returncode == 0 and again.stderr.count("reusing the finished run") == 8
  assert json.load(open(os.path.join(out, "nsgd_table.json")))["rows"] == rows
  # The per-seed table: seed 1 of NSGD against SGD's seed 1, every number
  # from the JSON; --from_json prints the same tables without training.
  n1, s1 = nsgd["seeds"][1], rows[0]["seeds"][1]
  line = (f"| NSGD gamma=0.5 | 1 | {'yes' if n1['reached'] else 'no'} | {n1['steps']} | "
          f"{n1['steps'] / 5:.1f} | "
          f"{n1['lambda_max']:.1f} | {n1['lambda_max'] / s1['lambda_max']:.2f} | "
          f"{n1['test_accuracy']:.4f} | {n1['test_accuracy'] - s1['test_accuracy']:+.4f} |")
  assert line in proc.stdout
  report = subprocess.run(
      args[:2] + [f"--from_json={out}/nsgd_table.json", "--paired_losses=2.2",
                  f"--out={tmp_path / 'none'}"],  # its settings come from the JSON
      capture_output=True, text=True, timeout=300, env=env)
  assert report.returncode == 0, report.stderr[-3000:]
  tables = lambda text: [l for l in text.splitlines() if l.startswith("| ")]
  assert tables(report.stdout) == tables(proc.stdout) and line in report.stdout
  assert "reusing" not in report.stderr and not os.path.exists(tmp_path / "none")
  bad = subprocess.run(args[:2] + [f"--from_json={out}/nsgd_table.png"],
                       capture_output=True, text=True, timeout=300, env=env)
  assert bad.returncode != 0 and "--from_json=" in bad.stderr


def test_sweep_experiment_in_process(tmp_path):
  """tf_sharpness.experiments.sweep without the command line: the settings
  of both sweeps, one entry per setting over the seeds (its means from the
  runs), the JSON read back by `report`, and reuse on a second call."""
  from tf_sharpness.experiments import results, sweep
  settings = sweep.Settings(
      model="fcn", train_size=100, eval_size=50, hessian_fraction=0.3, seeds=(0, 1),
      learning_rates=(0.1, 0.01), lr_sweep_batch=25, lr_epochs=(1.0,), batch_sizes=(10, 50),
      batch_sweep_lr=0.05, batch_sweep_steps=4, measure_every_epochs=0.5, measurements=2,
      loss_threshold=2.2, top_k=1, out=str(tmp_path / "sweep"))
  chosen = settings.settings()
  assert [(s.sweep, s.learning_rate, s.batch_size) for s in chosen] == [
      ("learning rate", 0.1, 25), ("learning rate", 0.01, 25),
      ("batch size", 0.05, 10), ("batch size", 0.05, 50)]
  entries = [sweep.run_setting(settings, s) for s in chosen]
  for e in entries:
    assert e["seeds"] == [0, 1] and len(e["runs"]) == 2
    peaks = [r["peak_lambda_max"] for r in e["runs"]]
    assert e["peak_lambda_max"][0] == pytest.approx(np.mean(peaks))
  data = json.loads(json.dumps(sweep.to_json(settings, entries)))
  assert results.identify(data) == "sweep"
  assert sweep.results_of(data) == json.loads(json.dumps(entries))  # (tuples as lists)
  assert "lr0.1_b25" in results.report(data)
  assert sweep.run_setting(settings, chosen[0]) == entries[0]  # reused, not trained again


def test_sharpness_vs_lr_batch_driver(tmp_path):
  out = str(tmp_path / "svlb")
  args = [sys.executable, os.path.join(REPO, "scripts", "sweep.py"),
          "--learning_rates=0.1,0.01", "--lr_epochs=1,2", "--lr_sweep_batch=25",
          "--batch_sizes=10,50", "--batch_sweep_lr=0.05", "--batch_sweep_steps=4",
          "--measure_every_epochs=0.5", "--measurements=2", "--seeds=0,1",
          "--train_size=100", "--model=fcn",
          "--top_k=2", "--hessian_fraction=0.3", "--eval_size=50",
          "--loss_threshold=2.2", "--loss_levels=5,2.2,0.1", f"--out={out}"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = json.load(open(os.path.join(out, "sharpness.json")))
  assert saved["experiment"] == "sweep" and saved["settings"]["batch_sizes"] == [10, 50]
  rows = saved["results"]
  for r in rows:  # at each loss level and band, per run and over seeds
    for run in r["runs"]:
      assert run["by_loss"] == trajectory.by_loss(run, [5.0, 2.2, 0.1])
    at_22 = [run["by_loss"]["at_level"][1] for run in r["runs"]]
    assert r["by_loss"]["seeds_at_level"][1] == sum(a is not None for a in at_22)
    if None not in at_22:
      assert r["by_loss"]["at_level"][1][0] == pytest.approx(np.mean(at_22))
    band = [run["by_loss"]["band_mean"][0] for run in r["runs"]]
    if None not in band:
      assert r["by_loss"]["band_mean"][0][0] == pytest.approx(np.mean(band))
    assert r["by_loss"]["band_count"][0] == sum(
        run["by_loss"]["band_count"][0] for run in r["runs"])
    assert r["by_loss"]["seeds_in_band"][0] == sum(b is not None for b in band)
  # The batch sweep's ratios are to its first setting, B = 10: 1.00 for itself.
  assert rows[2]["by_loss"]["seeds_at_level"][0] == 2  # the initial loss is below 5
  line = next(l for l in proc.stdout.splitlines()
              if l.startswith("| batch size | 0.05 | 10 | 5 |"))
  assert line.split(" | ")[6] == "1.00 (1.00–1.00) [1.00, 1.00]", line
  band = rows[2]["by_loss"]
  assert f"| {band['band_count'][0]} ({band['seeds_in_band'][0]}/2) |" in line, line
  line = next(l for l in proc.stdout.splitlines()
              if l.startswith("| batch size | 0.05 | 50 | 5 |"))
  ratio = rows[3]["by_loss"]["at_level"][0][0] / rows[2]["by_loss"]["at_level"][0][0]
  per_seed = [b["by_loss"]["at_level"][0] / a["by_loss"]["at_level"][0]
              for a, b in zip(rows[2]["runs"], rows[3]["runs"])]  # seed 0, then seed 1
  # ratio of means (per-seed range) [95% interval of the per-seed ratios]
  assert line.split(" | ")[6].startswith(
      f"{ratio:.2f} ({min(per_seed):.2f}–{max(per_seed):.2f}) ["), line
  assert [(r["sweep"], r["learning_rate"], r["batch_size"], r["steps"]) for r in rows] == [
      ("learning rate", 0.1, 25, 4), ("learning rate", 0.01, 25, 8),
      ("batch size", 0.05, 10, 4), ("batch size", 0.05, 50, 4)]  # equal steps
  for r in rows:
    assert [run["seed"] for run in r["runs"]] == [0, 1]
    for run in r["runs"]:
      every = 2  # half an epoch of 4 steps; the batch runs: 4 steps / 2 measurements
      assert run["steps"] == list(range(0, r["steps"] + 1, every))
      assert run["peak_lambda_max"] == max(run["lambda_max"]) > 0
      assert all(l is not None for l in run["train_loss"])
      reached = [t for t, l in zip(run["lambda_max"], run["train_loss"]) if l <= 2.2]
      assert run["lambda_max_at_loss_threshold"] == (reached[0] if reached else None)
    peaks = [run["peak_lambda_max"] for run in r["runs"]]
    mean, std = r["peak_lambda_max"]
    assert mean == pytest.approx(np.mean(peaks)) and std == pytest.approx(np.std(peaks, ddof=1))
  # The seed changes the initialization; within a seed all runs share it.
  start = lambda r, seed: r["runs"][seed]["initial_lambda_max"]
  assert len({round(start(r, 0), 6) for r in rows}) == 1
  assert start(rows[0], 0) != start(rows[0], 1)
  assert "| batch size | 0.05 | 50 | 4 |" in proc.stdout
  assert os.path.exists(os.path.join(out, "sharpness.png"))
  # Started again, the finished runs are reused, not retrained.
  again = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
  assert again.returncode == 0 and again.stderr.count("reusing the finished run") == 8
  assert json.load(open(os.path.join(out, "sharpness.json")))["results"] == rows
  # Seed 0 at eta = 0.01 trained on to 3 epochs in the same folder, with its
  # own JSON: the 2-epoch sweep then reads that run's first 8 steps.
  sweep_flags = ("--learning_rates", "--lr_epochs", "--batch_sizes", "--seeds")
  longer = [a for a in args if not a.startswith(sweep_flags)] + [
      "--learning_rates=0.01", "--lr_epochs=3", "--batch_sizes=", "--seeds=0",
      f"--json={tmp_path}/long.json", f"--plot={tmp_path}/long.png"]
  proc = subprocess.run(longer, capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (long_row,) = json.load(open(tmp_path / "long.json"))["results"]
  assert long_row["runs"][0]["steps"] == list(range(0, 13, 2))
  assert json.load(open(os.path.join(out, "sharpness.json")))["results"] == rows  # not overwritten
  again = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
  assert again.returncode == 0 and "reusing the first 8 steps of the longer run" in again.stderr
  assert json.load(open(os.path.join(out, "sharpness.json")))["results"] == rows
  for bad, says in (("--loss_levels=1,2", "--loss_levels must decrease strictly"),
                    ("--loss_levels=1,x", "--loss_levels=1,x: float values")):
    proc = subprocess.run(args + [bad], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-500:]


def _children(pid):
  """PIDs whose parent is ``pid`` (from /proc)."""
  out = []
  for stat in os.listdir("/proc"):
    if stat.isdigit():
      try:
        with open(f"/proc/{stat}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid:
        out.append(int(stat))
  return out


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_killed_phase_diagram_leaves_no_worker_running(tmp_path):
  """`kill` of the driver stops its worker processes too (an orphaned worker
  would go on appending to runs.jsonl beside the next invocation's)."""
  import time
  out = str(tmp_path / "phase")
  proc = subprocess.Popen(
      [sys.executable, os.path.join(REPO, "scripts", "phase.py"),
       "--depths=1", "--widths=8,16", "--train_size=64", "--batch_size=32",
       "--hessian_size=32", "--steps=2", "--coarse_dx=0.01", "--dx=0.005",
       "--x_max=30", "--workers=2", f"--out={out}"],  # minutes of work per width
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  path = os.path.join(out, "runs.jsonl")
  deadline = time.time() + 300
  while not (os.path.exists(path) and os.path.getsize(path)) and time.time() < deadline:
    time.sleep(0.2)
  assert proc.poll() is None, "the sweep ended before it could be killed"
  workers = _children(proc.pid)
  assert workers
  proc.terminate()
  proc.wait(timeout=60)
  deadline = time.time() + 30
  while any(_alive(w) for w in workers) and time.time() < deadline:
    time.sleep(0.2)
  assert not [w for w in workers if _alive(w)]


def test_edge_quantities_experiment_in_process(tmp_path):
  """experiments.edge_quantities: every quantity measured at the same steps,
  the late ratio to 2/eta from the series, the table over seeds, the JSON
  read back by `report`, and reuse on a second run."""
  from tf_sharpness.experiments import edge_quantities as E
  from tf_sharpness.experiments import results
  settings = E.Settings(model="fcn", train_size=100, batch_size=20, hessian_fraction=0.4,
                        learning_rates=(0.05,), seeds=(0, 1), steps=8, every=2,
                        minibatches=2, late_fraction=0.5, out=str(tmp_path / "edge"))
  result = E.run(settings)
  assert [(r["learning_rate"], r["seed"]) for r in result.runs] == [(0.05, 0), (0.05, 1)]
  for r in result.runs:
    s = r["series"]
    assert s["steps"] == [0, 2, 4, 6, 8] or s["steps"] == [0, 2, 4, 6]
    for q in E.QUANTITIES:
      assert len(s[q]) == len(s["steps"])
    late = [v for v in s["batch"][len(s["steps"]) // 2:] if v is not None]
    assert r["late"]["batch"]["late_ratio"] == pytest.approx(np.median(late) / 40.0)
    assert r["late"]["batch"]["late_mean_ratio"] == pytest.approx(np.mean(late) / 40.0)
    assert r["late"]["batch"]["late_infinite"] == 0.0
  text = E.table(result)
  assert "| 0.05 | 40.0 | lambda_max | 2 |" in text and "| 0.05 | 40.0 | batch | 2 |" in text
  data = json.loads(json.dumps(result.to_json()))
  assert results.identify(data) == "edge_quantities" and text in results.report(data)
  assert E.run(settings).runs == result.runs  # reused
  # A critical sharpness that is infinite (no descent along the update) or
  # huge counts in the median and the infinite share, not in a mean.
  records = [{"step": i, "top_eigenvalues": [30.0], "directional": {
      "batch": 40.0, "update": 10.0, "gradient": 20.0,
      "critical_update": [40.0, 1e9, float("inf"), 44.0, 36.0][i]}} for i in range(5)]
  late = E.summarize(records, 0.05, 0, 1.0)["late"]["critical_update"]
  assert late["late_ratio"] == pytest.approx(1.1) and late["late_infinite"] == 0.2
  assert late["late_above"] == pytest.approx(0.6)
  # a seed whose late median is infinite is counted apart in the table
  runs = [{"learning_rate": 0.05, "seed": i, "diverged": False, "late": {
      q: {"late_ratio": [1.0, 1.2, float("inf")][i], "late_above": 0.5, "late_infinite": 0.0}
      for q in E.QUANTITIES}} for i in range(3)]
  text = E.table(E.Result(dataclasses.replace(settings, seeds=(0, 1, 2)), runs))
  assert "| 0.05 | 40.0 | batch | 3 | 1.100 ± 0.141 (+1 seeds ∞) |" in text


def test_self_stabilization_experiment_in_process(tmp_path):
  """experiments.self_stabilization: GD on a shrunken eos.cfg with grad
  lambda_1 every 3 steps, the series, the JSON read back by `report`,
  reuse; the split at 2/eta and the table on records with known values."""
  from tf_sharpness.cli import flags as flags_lib
  from tf_sharpness.experiments import results
  from tf_sharpness.experiments import self_stabilization as S
  base = dataclasses.replace(flags_lib.shipped_config("eos"), train_size=60, width=16,
                             hessian_fraction=1.0)
  settings = S.Settings(learning_rates=(0.05,), seeds=(0, 1), steps=9, every=3,
                        from_step=0, out=str(tmp_path / "ss"))
  result = S.run(settings, base)
  assert [(r["learning_rate"], r["seed"]) for r in result.runs] == [(0.05, 0), (0.05, 1)]
  for r in result.runs:
    s = r["series"]
    assert s["steps"][:3] == [0, 3, 6] and len(s["cosine"]) == len(s["steps"])
    assert all(-1 <= c <= 1 for c in s["cosine"])
    assert all(0 <= v <= 1 for v in s["share_along_u"]) and all(
        -1 <= c <= 1 for c in s["cosine_without_u"])
    assert r["late"]["count"] == len(s["steps"])
  data = json.loads(json.dumps(result.to_json()))
  assert results.identify(data) == "self_stabilization"
  assert S.table(result) in results.report(data)
  png = S.figure(result, str(tmp_path / "ss.png"))
  assert png and os.path.getsize(png) > 10_000
  metrics = os.path.join(settings.out, "lr0.05_seed0", "metrics.jsonl")
  written = os.path.getmtime(metrics)
  assert S.run(settings, base).runs == result.runs  # reused, not trained again
  assert os.path.getmtime(metrics) == written
  # Known values: r = (u.g / |g|)^2 = 0.01, 0.25, 0.04, 0.36, 0.09 from step 10
  # on (steps 10..20: r 0.04, 0.36, 0.09; large = above the median 0.09)
  perp = [0.5, -0.5, -0.3, 0.4, -0.1]
  records = [{"step": 5 * i, "directional": {"self_stabilization": {
      "lambda_1": [50.0, 30.0, 45.0, 35.0, 41.0][i], "cosine_with_loss_gradient": 0.1 * i,
      "cosine_without_u": perp[i], "u_dot_loss_gradient": [0.1, 0.5, 0.2, 0.6, 0.3][i],
      "loss_gradient_norm": 1.0}}} for i in range(5)]
  late = S.summarize(records, 0.05, 0, from_step=10)["late"]
  assert late["count"] == 3 and late["lambda_1_ratio"] == pytest.approx(121 / 3 / 40)
  assert late["share_along_u"] == pytest.approx((0.04 + 0.36 + 0.09) / 3)
  assert late["cosine"] == pytest.approx(0.3)
  assert late["cosine_without_u"] == pytest.approx(0.0)
  assert late["large_minus_small"] == pytest.approx(0.4 - (-0.3 - 0.1) / 2)
  assert late["spearman"] == pytest.approx(1.0)  # r and the cosine in the same order
  runs = [{"learning_rate": 0.05, "seed": i, "diverged": False, "late": {
      "count": 4, "lambda_1_ratio": 1.0, "share_along_u": 0.2, "cosine": 0.0,
      "cosine_without_u": [0.3, 0.2, 0.4][i], "large_minus_small": [0.3, 0.2, 0.4][i],
      "spearman": 0.5}} for i in range(3)]
  runs.append({"learning_rate": 0.05, "seed": 3, "diverged": True, "late": None})
  text = S.table(S.Result(dataclasses.replace(settings, seeds=(0, 1, 2, 3)), runs))
  # mean 0.3, t_{0.975,2} = 4.303 x 0.1 / sqrt(3) = 0.248
  assert ("| 0.05 | 40.0 | 3 (1) | 12 | 1.000 | 0.2 | +0.000 [+0.000, +0.000] | "
          "+0.300 [+0.052, +0.548] | +0.300 [+0.052, +0.548] | 3/3 |") in text
