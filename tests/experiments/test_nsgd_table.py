"""The NSGD table's summaries over seeds (tf_sharpness.experiments.nsgd_table),
on synthetic runs; training is covered by test_experiments' driver test."""

import numpy as np
import pytest

from tf_sharpness.experiments import nsgd_table


def _records(lambdas, losses, test_accuracy, checks=()):
  records = [{"step": 10 * i, "top_eigenvalues": [lam, 1.0], "train_loss": loss,
              "test_accuracy": test_accuracy, "distance_from_init": 0.5 * i}
             for i, (lam, loss) in enumerate(zip(lambdas, losses))]
  for record, check in zip(records[1:], checks):
    record["nsgd_step"] = check
  records[-1]["target_reached"] = True
  return records


def test_summarize_takes_the_stop_and_the_projection_check():
  check = lambda f, p: {"step_fraction": f, "predicted_step_fraction": p,
                        "gradient_fraction": 0.2}
  s = nsgd_table.summarize(_records([5.0, 7.0, 6.0], [2.0, 1.7, 1.4], 0.4,
                                    [check(0.30, 0.30), check(0.33, 0.30)]))
  assert (s["lambda_max"], s["train_loss"], s["steps"], s["reached"]) == (6.0, 1.4, 20, True)
  assert s["distance_from_init"] == 1.0 and s["test_accuracy"] == 0.4
  assert s["step_fraction"] == pytest.approx(0.315)
  assert s["projection_check_max_rel_deviation"] == pytest.approx(0.1)
  assert s["trajectory"] == {"steps": [0, 10, 20], "train_loss": [2.0, 1.7, 1.4],
                             "lambda_max": [5.0, 7.0, 6.0], "test_accuracy": [0.4] * 3,
                             "distance_from_init": [0.0, 0.5, 1.0]}
  plain = nsgd_table.summarize(_records([5.0], [2.0], 0.3))
  assert plain["step_fraction"] is None and plain["projection_check_max_rel_deviation"] is None


def test_over_seeds_pairs_lambda_max_with_sgd_of_the_same_seed():
  seed = lambda i, lam, acc: {"seed": i, **nsgd_table.summarize(
      _records([lam], [1.0], acc))}
  sgd = nsgd_table.over_seeds("SGD", [seed(0, 100.0, 0.40), seed(1, 200.0, 0.42)], None)
  assert sgd["lambda_max"] == pytest.approx([150.0, np.std([100, 200], ddof=1)])
  assert sgd["lambda_max_over_sgd"] is None and sgd["reached"] == 2
  # listed in another order: still paired by seed
  nsgd = nsgd_table.over_seeds("NSGD gamma=5", [seed(1, 50.0, 0.44), seed(0, 40.0, 0.41)], sgd)
  assert nsgd["lambda_max_over_sgd"] == pytest.approx([0.325, np.std([0.25, 0.4], ddof=1)])
  result = nsgd_table.Result.from_json([sgd, nsgd])
  text = nsgd_table.table(result, target_loss=1.0)
  assert "| NSGD gamma=5 | 2/2 | 0 ± 0 | 45.0 ± 7.1 | 0.33 ± 0.11 | 0.425 ± 0.021 |" in text
  seeds = nsgd_table.seeds_table(result, 1.0, steps_per_epoch=10, range_from=0)
  assert "| NSGD gamma=5 | 1 | yes | 0 | 0.0 | 50.0 | 0.25 | 0.4400 | +0.0200 |" in seeds
  assert nsgd_table.seed_sharpness_table(result) == ""


def test_settings_name_the_runs_and_their_folders():
  s = nsgd_table.Settings(gammas=(0.1, 5.0), sam_rhos=(0.05,), out="o")
  names = [n for n, _ in s.optimizers()]
  assert names == ["SGD", "NSGD gamma=0.1", "NSGD gamma=5", "SAM rho=0.05"]
  cfg = s.config(*s.optimizers()[2], seed=1)
  assert (cfg.optimizer, cfg.nsgd_gamma, cfg.logdir) == ("nsgd", 5.0, "o/NSGD_gamma5_seed1")
  assert s.config(*s.optimizers()[3], seed=0).sam_rho == 0.05
  # names read back exactly: 5.0 is "5", but two close gammas never share a folder
  close = nsgd_table.Settings(gammas=(0.1234567, 0.1234568))
  assert [n for n, _ in close.optimizers()][1:] == ["NSGD gamma=0.1234567",
                                                   "NSGD gamma=0.1234568"]


def test_from_json_refuses_other_files():
  for bad in ({"runs": []}, [], [{"run": "NSGD gamma=1", "seeds": []}], [{"run": "SGD"}],
              {"experiment": "eos", "rows": []}, {"experiment": "nsgd", "rows": []}):
    with pytest.raises(ValueError, match="not an NSGD table"):
      nsgd_table.Result.from_json(bad)


def test_the_json_carries_its_settings():
  """The JSON round-trips with its settings; a bare list of rows (the
  committed JSON from before) reads back without them."""
  rows = [{"run": "SGD", "seeds": []}]
  settings = nsgd_table.Settings(gammas=(0.1,), seeds=(0, 1), target_loss=0.02)
  back = nsgd_table.Result.from_json(nsgd_table.Result(rows, settings).to_json())
  assert back.settings == settings and back.rows == rows
  assert nsgd_table.Result.from_json(rows).settings is None
  with pytest.raises(ValueError, match="`gammas` must be numbers > 0"):
    nsgd_table.Settings(gammas=(0.0,))
  with pytest.raises(ValueError, match="`sharpness_measures` must be a list of"):
    nsgd_table.Settings(sharpness_measures=("sharpest",))


def test_a_diverged_seed_is_kept_apart_from_the_means():
  """A run that diverged (NaN loss) stays in the table as diverged, with
  its step; the means and the pairing with SGD use the other seeds."""
  seed = lambda i, lam, acc: {"seed": i, **nsgd_table.summarize(_records([lam], [1.0], acc))}
  sgd = nsgd_table.over_seeds("SGD", [seed(0, 100.0, 0.40), seed(1, 200.0, 0.42)], None)
  blown = _records([50.0, 60.0], [1.2, 0.9], 0.3)
  blown.append({"step": 30, "loss": None, "diverged": True, "error": "non-finite loss: nan"})
  s1 = {"seed": 1, **nsgd_table.summarize(blown)}
  assert (s1["diverged"], s1["steps"], s1["reached"]) == (True, 30, False)
  assert s1["trajectory"]["lambda_max"] == [50.0, 60.0] and "lambda_max" not in s1
  row = nsgd_table.over_seeds("NSGD gamma=5", [seed(0, 40.0, 0.41), s1], sgd)
  assert row["diverged"] == 1 and row["reached"] == 1
  assert row["lambda_max"] == [40.0, 0.0] and row["test_accuracy"] == [0.41, 0.0]
  assert row["lambda_max_over_sgd"] == [0.4, 0.0]  # seed 0 only
  result = nsgd_table.Result([sgd, row])
  assert "| NSGD gamma=5 | 1/2, 1 diverged | 0 ± 0 | 40.0 ± 0.0 |" in nsgd_table.table(result, 1.0)
  seeds = nsgd_table.seeds_table(result, 1.0, steps_per_epoch=10, range_from=0)
  assert "| NSGD gamma=5 | 1 | diverged | 30 | 3.0 | — | — | — | — | — | — | 50.0–60.0 |" in seeds
  assert "diverged" not in nsgd_table.table(nsgd_table.Result([sgd]), 1.0)


def test_paired_intervals():
  """The 95% t-interval of paired differences and of ratios (on logs),
  against values worked by hand from Student's t table."""
  from tf_sharpness.experiments import seeds
  ci = seeds.paired_interval([1.0, 2.0, 3.0, None])
  half = 4.3027 / np.sqrt(3)  # s = 1, n = 3
  assert (ci["mean"], ci["n"], ci["positive"]) == (2.0, 3, 3)
  assert (ci["low"], ci["high"]) == pytest.approx((2 - half, 2 + half), abs=1e-4)
  assert not ci["clear"]  # the interval reaches below 0
  assert seeds.paired_interval([0.9, 1.0, 1.1, 1.0])["clear"]
  one = seeds.paired_interval([0.5])
  assert one["low"] is None and not one["clear"]
  assert seeds.paired_interval([None]) is None
  r = seeds.ratio_interval([2.0, 2.0, 2.0])
  assert (r["mean"], r["low"], r["high"], r["positive"], r["clear"]) == pytest.approx(
      (2.0, 2.0, 2.0, 3, True))
  r = seeds.ratio_interval([0.5, 2.0])  # symmetric on the log scale
  assert r["mean"] == pytest.approx(1.0) and r["low"] * r["high"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="positive"):
    seeds.ratio_interval([1.0, -1.0])


def test_paired_comparisons_at_a_loss_level_in_the_same_runs():
  """Where each run first reaches a training loss, paired with SGD from the
  same seed: test accuracy difference, lambda_max ratio, steps difference."""
  def seed(i, losses, lambdas, accuracies):
    records = _records(lambdas, losses, 0.0)
    for record, acc in zip(records, accuracies):
      record["test_accuracy"] = acc
    return {"seed": i, **nsgd_table.summarize(records)}
  sgd = nsgd_table.over_seeds("SGD", [
      seed(0, [2.0, 1.4, 0.5], [10.0, 20.0, 30.0], [0.1, 0.30, 0.40]),
      seed(1, [2.0, 1.2, 0.4], [10.0, 40.0, 30.0], [0.1, 0.32, 0.42])], None)
  nsgd = nsgd_table.over_seeds("NSGD gamma=0.1", [
      seed(0, [2.0, 1.6, 1.3, 0.5], [10.0, 50.0, 60.0, 90.0], [0.1, 0.2, 0.31, 0.41]),
      seed(1, [2.0, 1.1, 0.9, 0.4], [10.0, 80.0, 70.0, 60.0], [0.1, 0.34, 0.35, 0.44])], sgd)
  result = nsgd_table.Result([sgd, nsgd])
  assert nsgd_table.at_loss(nsgd["seeds"][0], 1.5) == {
      "steps": 20, "lambda_max": 60.0, "test_accuracy": 0.31, "distance_from_init": 1.0}
  assert nsgd_table.at_loss(nsgd["seeds"][0], 0.1) is None
  assert nsgd_table.at_loss(nsgd["seeds"][0], None)["steps"] == 30  # the stop
  (early,) = nsgd_table.paired(result, 1.5)
  assert early["pairs"] == 2
  assert early["test_accuracy_difference"]["mean"] == pytest.approx(0.015)  # +0.01, +0.02
  assert early["steps_difference"]["mean"] == pytest.approx(5.0)  # 20-10, 10-10
  assert early["lambda_max_ratio"]["mean"] == pytest.approx(np.sqrt(3.0 * 2.0))
  (late,) = nsgd_table.paired(result, None)
  assert late["test_accuracy_difference"]["mean"] == pytest.approx(0.015)
  text = nsgd_table.paired_table(result, [1.5, None])
  assert "| NSGD gamma=0.1 | first at loss 1.5 | 2 | +1.50 [" in text
  assert "| NSGD gamma=0.1 | at the stop | 2 |" in text


def test_pairs_with_any_reference_run():
  """Paired with the smaller-step control instead of SGD: the same
  differences, signs flipped for SGD itself; an unknown run is refused."""
  seed = lambda i, lam, acc: {"seed": i, **nsgd_table.summarize(_records([lam], [0.1], acc))}
  sgd = nsgd_table.over_seeds("SGD", [seed(0, 100.0, 0.40), seed(1, 200.0, 0.42)], None)
  control = nsgd_table.over_seeds("SGD eta=0.005", [seed(0, 300.0, 0.38),
                                                    seed(1, 500.0, 0.41)], sgd)
  result = nsgd_table.Result([sgd, control])
  (vs_control,) = nsgd_table.paired(result, None, reference="SGD eta=0.005")
  assert vs_control["run"] == "SGD"
  assert vs_control["test_accuracy_difference"]["mean"] == pytest.approx(0.015)
  assert vs_control["lambda_max_ratio"]["mean"] == pytest.approx(np.sqrt(100 / 300 * 200 / 500))
  assert "test accuracy - SGD eta=0.005's (points)" in nsgd_table.paired_table(
      result, [None], "SGD eta=0.005")
  with pytest.raises(ValueError, match="no run 'SAM' to pair with"):
    nsgd_table.paired(result, None, reference="SAM")


def _result(seeds, lambdas, **settings):
  """SGD and NSGD gamma=0.1 over ``seeds``, NSGD's lambda_max 2x SGD's."""
  s = nsgd_table.Settings(gammas=(0.1,), seeds=tuple(seeds), **settings)
  seed = lambda i, lam: {"seed": i, **nsgd_table.summarize(_records([lam], [1.0], 0.4))}
  sgd = nsgd_table.over_seeds("SGD", [seed(i, lam) for i, lam in zip(seeds, lambdas)], None)
  nsgd = nsgd_table.over_seeds("NSGD gamma=0.1", [seed(i, 2 * lam) for i, lam in
                                                  zip(seeds, lambdas)], sgd)
  return nsgd_table.Result([sgd, nsgd], s)


def test_merge_adds_seeds_as_if_trained_in_one_call():
  together = _result([0, 1, 2], [10.0, 20.0, 40.0])
  merged = nsgd_table.merge(_result([0, 2], [10.0, 40.0]),
                            _result([1], [20.0], out="elsewhere"))
  assert merged.settings.seeds == (0, 1, 2) and merged.settings.out == "elsewhere"
  for a, b in zip(merged.rows, together.rows):
    assert [s["seed"] for s in a["seeds"]] == [0, 1, 2]
    assert a["lambda_max"] == pytest.approx(b["lambda_max"])
    assert a["lambda_max_over_sgd"] == b["lambda_max_over_sgd"]
  with pytest.raises(ValueError, match=r"seeds \[1\] are in both"):
    nsgd_table.merge(_result([0, 1], [1.0, 2.0]), _result([1], [2.0]))
  with pytest.raises(ValueError, match=r"settings differ in \['learning_rate'\]"):
    nsgd_table.merge(_result([0], [1.0]), _result([1], [2.0], learning_rate=0.5))


def test_add_to_is_refused_before_training(tmp_path):
  """--add_to with other settings, or a seed already there, stops before a
  single run is trained (the run folder stays empty)."""
  import json
  from conftest import run_cli
  earlier = _result([0, 1], [10.0, 20.0], train_size=50)
  path = tmp_path / "earlier.json"
  path.write_text(json.dumps(earlier.to_json()))
  out = tmp_path / "out"
  for args, message in ((["--seeds=2", "--train_size=60"], "settings differ in ['train_size']"),
                        (["--seeds=1", "--train_size=50"], "seeds [1] are in both")):
    proc = run_cli("nsgd", "--gammas=0.1", *args, f"--out={out}", f"--add_to={path}")
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert "--add_to" in proc.stderr and not out.exists()
  proc = run_cli("nsgd", f"--from_json={path}", f"--add_to={path}")
  assert proc.returncode != 0 and "cannot go with --from_json" in proc.stderr
