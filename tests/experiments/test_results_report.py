"""`tf-sharpness report FILE` (tf_sharpness.experiments.results) on the
committed outputs of every experiment: each is recognized as the
experiment that wrote it and printed with the numbers docs/results.md
quotes, with no settings typed again."""

import os

import pytest

from conftest import REPO
from tf_sharpness.experiments import nsgd_table, results

RESULTS = os.path.join(REPO, "docs", "results")


@pytest.mark.parametrize("name,kind,expected", [
    ("nsgd_sam.json", "nsgd", "| SAM rho=0.05 | first at loss 1.5 | 3 | +1.32 [-1.59, +4.24]"),
    ("nsgd_sam_source_order.json", "nsgd",
     "| SAM rho=0.05 | first at loss 1.5 | 3 | +1.67 [-0.43, +3.77]"),
    ("nsgd_equal_loss.json", "nsgd",
     "| NSGD gamma=5 | first at loss 1.5 | 3 | +0.45 [-2.63, +3.53] (2/3) | 0.26 [0.20, 0.34]"),
    ("nsgd_equal_loss_source_order.json", "nsgd",
     "| NSGD gamma=5 | first at loss 1.5 | 3 | -0.33 [-7.29, +6.63] (1/3) | 0.31 [0.13, 0.72]"),
    ("step_length.json", "step_length", "83% ± 7%"),
    ("eos.json", "eos", "| lr0.02 | 100.0 | 100.0 | 378.3 |"),
    ("sharpness_batch_3seeds.json", "sweep", "1.48 (1.36–1.67) [1.13, 1.93] *"),
    ("sharpness_batch_3seeds_source_order.json", "sweep", "1.41 (1.30–1.50) [1.17, 1.71] *"),
    ("sharpness_lr_3seeds.json", "sweep", "7.83 (6.47–8.79) [5.12, 12.31] *"),
    ("walk.json", "walk", "| 0.1 | — | — | — | 60 | 48.3% | 0.53 | 98.3% | -0.43 | — | — |"),
    ("walk_lr_batch.json", "walk",
     "| 0.1 | 32 | 1000:1060 | 3 | 98.3 ± 1.7% | -0.12 ± 0.01 | 0.0789 ± 0.0054 | 10.23 ± 0.17 |"),
    ("walk_lr_batch_source_order.json", "walk",
     "| 0.1 | 32 | 1000:1060 | 3 | 62.8 ± 4.2% | -0.12 ± 0.02 | 0.1055 ± 0.0160 | 10.32 ± 0.13 |"),
    ("phase_d8_paper_init_runs.jsonl", "phase",
     "| 7 | 1024 | 3 | 2081.2 (1864.5–2205.1) | 2.64 (2.64–2.64) | 4.10 (3.73–4.29) | 13.00 (13.00–13.00) |"),
    ("phase_d8_paper_init_runs_source_order.jsonl", "phase",
     "| 7 | 1024 | 3 | 2091.5 (1878.4–2212.2) | 2.64 (2.64–2.64) | 4.10 (3.73–4.29) | 13.31 (13.00–13.93) |"),
    ("phase_d2_runs.jsonl", "phase",
     "| 1 | 512 | 0 | 320.9 | 2.64 (2.46, 2.64] | 3.03 (2.83, 3.03] | 4.29 [4.29, 4.59) | = c_max |"),
    ("phase_d2_runs_source_order.jsonl", "phase",
     "| 1 | 512 | 0 | 344.1 | 3.03 (2.83, 3.03] | 3.48 (3.25, 3.48] | 4.59 [4.59, 4.92) | = c_max |"),
    ("phase_depth_runs.jsonl", "phase",
     "| 3 | 512 | 3 | 566.9 (516.6–618.8) | 2.46 (2.46–2.46) | 3.40 (3.25–3.48) | 8.59 (8.00–9.19) |"),
    ("phase_depth_runs_source_order.jsonl", "phase",
     "| 3 | 512 | 3 | 590.3 (541.4–649.0) | 2.64 (2.64–2.64) | 3.65 (3.48–3.73) | 8.98 (8.57–9.19) |"),
    ("edge_quantities.json", "edge_quantities",
     "| 0.01 | 200.0 | batch | 3 | 0.619 ± 0.013 | 0.606–0.630 | 0% | 0% |"),
    ("edge_quantities.json", "edge_quantities",
     "| 0.01 | 200.0 | critical_update | 3 | 0.948 ± 0.110 | 0.822–1.024 | 45% | 0% |"),
    ("edge_quantities_full_data.json", "measure",
     "| lr0.01_seed1 | 1560 | 200.0 | 5000 | 211.19 | 1.056 | 250 | 218.44 | 1.034 |"),
    ("self_stabilization.json", "self_stabilization",
     "| 0.02 | 100.0 | 3 (0) | 300 | 1.030 | 0.248 | +0.022 [-0.029, +0.073] |"),
    ("resnet32.json", "trajectory", None),
])
def test_every_experiment_output_is_recognized_and_reported(name, kind, expected):
  data = results.load(os.path.join(RESULTS, name))
  assert results.identify(data) == kind
  if expected is None:
    with pytest.raises(ValueError, match="the trajectory report prints it"):
      results.report(data)
    return
  text = results.report(data)
  assert text.startswith(f"({kind})") and expected in text


def test_a_typed_result_reports_with_its_own_settings():
  """An NSGD JSON with its settings: the target loss and epochs come from
  them (the per-seed table's epochs are steps / (train_size // batch))."""
  rows = results.load(os.path.join(RESULTS, "nsgd_convergence.json"))
  settings = nsgd_table.Settings(train_size=1000, batch_size=100, target_loss=0.02)
  text = results.report(nsgd_table.Result(rows, settings).to_json(), loss_levels=[1.5])
  assert "| run | reached loss 0.02 |" in text and "without its settings" not in text
  assert "| NSGD gamma=0.1 | 0 | yes | 750 | 75.0 |" in text  # 750 steps / 10 per epoch
  assert "| NSGD gamma=0.1 | first at loss 0.02 | 3 | +0.47 [-0.02, +0.95]" in text
  assert "| NSGD gamma=0.1 | first at loss 1.5 |" in text


def test_other_files_are_refused_naming_the_experiments():
  for bad in ({"a": 1}, [], [{"run": "x"}], "text"):
    with pytest.raises(ValueError, match="not the output of any experiment"):
      results.identify(bad)


def test_typed_eos_and_walk_json_carry_their_settings():
  """The drivers now write {"experiment", "settings", runs/rows}; report
  and the readers take both that and the older bare lists."""
  from tf_sharpness.experiments import eos, walk
  runs = results.load(os.path.join(RESULTS, "eos.json"))
  typed = eos.to_json(eos.Settings(), runs)
  assert typed["settings"]["learning_rates"] == [0.01, 0.02, 0.04]
  assert results.identify(typed) == "eos" and eos.runs_of(typed) == runs
  assert results.report(typed) == results.report(runs)
  rows = results.load(os.path.join(RESULTS, "walk.json"))
  typed = walk.to_json(walk.Settings(), rows)
  assert results.identify(typed) == "walk" and results.report(typed) == results.report(rows)


def test_the_wide_limit_runs_give_one_c_loss_at_10_and_30_steps():
  """docs/results.md's d = 2, width 2,048 runs over 30 steps: c_loss per seed
  as the page gives it, the same when the runs are read at step 10."""
  from tf_sharpness.experiments import phase
  groups = phase.by_configuration(results.load(os.path.join(RESULTS, "phase_horizon_runs.jsonl")))
  assert sorted(groups) == [(1, 2048, 0), (1, 2048, 1), (1, 2048, 2)]
  for (_, _, seed), records in sorted(groups.items()):
    full, early = phase.critical_values(records), phase.critical_values(records, horizon=10)
    assert round(full["c_loss"], 2) == {0: 2.22, 1: 2.14, 2: 2.14}[seed]
    assert early["c_loss"] == full["c_loss"] and early["c_loss_lo"] == full["c_loss_lo"]
    assert full["c_barrier"] == full["c_max"]  # no barrier on the grid
