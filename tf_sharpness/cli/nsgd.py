"""NSGD steers sharpness (Jastrzebski et al. 2019, Table 1), at equal
training loss and with seeds.

Trains the same model with SGD and with NSGD for each gamma (K = --top_k
directions refreshed every --refresh_every steps on the Hessian subset),
once per seed in --seeds, each run until its training loss (on --eval_size
training examples, measured every --refresh_every steps) first reaches
--target_loss (or --max_steps).  Reports, as mean +- std over seeds, at that
point: lambda_max (also as a ratio to SGD's from the same seed), test
accuracy, the steps it took and the distance from initialization; and, for
NSGD, the end-to-end check of the projection: the fraction of each step
that lies in the top-K subspace, measured against
gamma r / sqrt(1 - r^2 + gamma^2 r^2) with r the minibatch gradient's
fraction (``probes.NSGDRefreshProbe``).  Writes a Markdown table, JSON (with
every run's lambda_max and training-loss trajectory) and a plot of
lambda_max against step and against training loss (needs matplotlib:
pip install -e ".[experiments]").

Every run checkpoints; rerunning the same command reuses finished runs and
continues unfinished ones.  Below the table it lists every seed: steps
(and epochs), lambda_max and its ratio to SGD's, test accuracy and its
difference from SGD's, the distance from initialization, the gradient's
fraction r in the top-K span and the range of lambda_max from step
--range_from on.  --from_json=PATH reports a JSON this script wrote
(committed beside the results) without training.

    python scripts/nsgd_table.py --dataset=../shared/data/cifar10-jpeg.tar.gz \\
        --gammas=0.01,0.1,5 --seeds=0,1,2 --target_loss=1.5

--sam_rhos adds SGD+SAM runs and --sharpness_measures (e.g. adaptive_l2)
measures those sharpness measures with every measurement, reported at the
stop beside lambda_max and test accuracy.
"""

import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as tf_flags  # noqa: E402
from tf_sharpness import plotting  # noqa: E402
from tf_sharpness import tables  # noqa: E402
from tf_sharpness import training  # noqa: E402
from tf_sharpness.experiments.seeds import mean_std  # noqa: E402

tf_flags.define_config_flags(
    lower_bounds={"train_size": 10, "eval_size": 1, "batch_size": 1},
    dataset=..., train_size=5000, eval_size=..., learning_rate=..., batch_size=...,
    model=..., hessian_fraction=...)
flags.DEFINE_list("gammas", ["0.01", "0.1", "5"], "NSGD gammas (SGD is always run).")
flags.DEFINE_list("sam_rhos", [], "SAM radii: one SGD+SAM run per rho (Foret et al. 2021).")
flags.DEFINE_list("sharpness_measures", [], "Sharpness measures (tf_sharpness.sharpness: "
                  "e.g. adaptive_l2) taken with every measurement; the table gives them "
                  "at the stop.")
flags.DEFINE_float("sharpness_rho", 0.05, "Worst-case radius of --sharpness_measures.")
flags.DEFINE_list("seeds", ["0"], "Seeds; every optimizer runs once per seed.")
flags.DEFINE_float("target_loss", 1.5, "Training loss at which the runs are compared.",
                   lower_bound=0)
flags.DEFINE_integer("max_steps", 3000, "Most steps per run.", lower_bound=1)
flags.DEFINE_integer("top_k", 5, "NSGD directions K.", lower_bound=1)
flags.DEFINE_integer("refresh_every", 50, "Steps between direction refreshes "
                     "(and measurements).", lower_bound=1)
flags.DEFINE_string("out", "runs/nsgd_table", "Output folder.")
flags.DEFINE_string("plot", "", "PNG path of the plot (default OUT/nsgd_table.png).")
flags.DEFINE_string("from_json", "", "Report this JSON of an earlier run of the script "
                    "(its nsgd_table.json) instead of training; no plot unless --plot. "
                    "Give the --target_loss, --train_size and --batch_size it was made "
                    "with (the table's header and epochs use them).")
flags.DEFINE_integer("range_from", 200, "The per-seed table gives the range of lambda_max "
                     "from this step on.", lower_bound=0)
FLAGS = flags.FLAGS


def train_run(name, overrides, seed):
  every = FLAGS.refresh_every
  cfg = training.Config(
      dataset=FLAGS.dataset, train_size=FLAGS.train_size, model=FLAGS.model,
      learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
      steps=FLAGS.max_steps, target_train_loss=FLAGS.target_loss,
      spectrum_every=every, spectrum_k=FLAGS.top_k,
      hessian_fraction=FLAGS.hessian_fraction, eval_every=every,
      eval_size=FLAGS.eval_size, log_every=every, checkpoint_every=every, seed=seed,
      **({"sharpness_every": every, "sharpness_measures": tuple(FLAGS.sharpness_measures),
          "sharpness_rho": FLAGS.sharpness_rho} if FLAGS.sharpness_measures else {}),
      logdir=os.path.join(FLAGS.out, name.replace(" ", "_").replace("=", "") +
                          f"_seed{seed}"))
  return training.train_or_reuse(dataclasses.replace(cfg, **overrides))


def summarize(records):
  last = records[-1]
  trained = [r for r in records if "distance_from_init" in r]
  checks = [r["nsgd_step"] for r in records if "nsgd_step" in r]
  deviation = max((abs(c["step_fraction"] - c["predicted_step_fraction"]) /
                   max(c["predicted_step_fraction"], 1e-12) for c in checks), default=None)
  measured = [r for r in records if "top_eigenvalues" in r and "train_loss" in r]
  trajectory = {"steps": [r["step"] for r in measured],
                "train_loss": [r["train_loss"] for r in measured],
                "lambda_max": [r["top_eigenvalues"][0] for r in measured]}
  return {**{f"sharpness {k}": v for k, v in last.get("sharpness", {}).items()},
          "lambda_max": last["top_eigenvalues"][0], "test_accuracy": last["test_accuracy"],
          "train_loss": last["train_loss"], "steps": last["step"],
          "reached": bool(last.get("target_reached")),
          "distance_from_init": trained[-1]["distance_from_init"],
          "diverged": bool(last.get("diverged")),
          "step_fraction": float(np.mean([c["step_fraction"] for c in checks]))
          if checks else None,
          "gradient_fraction": float(np.mean([c["gradient_fraction"] for c in checks]))
          if checks else None,
          "projection_check_max_rel_deviation": deviation, "trajectory": trajectory}


def trained_rows() -> list[dict]:
  """Every optimizer over the seeds, trained (or reused), with the mean +-
  std over seeds and the ratio to SGD's lambda_max from the same seed."""
  runs = [("SGD", dict(optimizer="sgd"))]
  runs += [(f"NSGD gamma={g}", dict(optimizer="nsgd", nsgd_gamma=float(g),
                                    nsgd_top_k=FLAGS.top_k)) for g in FLAGS.gammas]
  runs += [(f"SAM rho={r}", dict(optimizer="sgd", sam_rho=float(r))) for r in FLAGS.sam_rhos]
  rows = []
  for name, overrides in runs:
    per_seed = []
    for seed in (int(s) for s in FLAGS.seeds):
      records = train_run(name, overrides, seed)
      if records[-1].get("diverged"):
        sys.exit(f"run {name} seed {seed} diverged at step {records[-1]['step']}")
      per_seed.append({"seed": seed, **summarize(records)})
    row = {"run": name, "seeds": per_seed}
    for key in ("lambda_max", "test_accuracy", "train_loss", "steps",
                "distance_from_init", "step_fraction", "gradient_fraction",
                *sharpness_keys(per_seed)):
      row[key] = mean_std([s[key] for s in per_seed])
    row["reached"] = sum(s["reached"] for s in per_seed)
    # Paired with SGD from the same seed (same initialization and batches).
    sgd = {s["seed"]: s["lambda_max"] for s in rows[0]["seeds"]} if rows else None
    row["lambda_max_over_sgd"] = mean_std(
        [s["lambda_max"] / sgd[s["seed"]] for s in per_seed]) if sgd else None
    checks = [s["projection_check_max_rel_deviation"] for s in per_seed
              if s["projection_check_max_rel_deviation"] is not None]
    row["projection_check_max_rel_deviation"] = max(checks) if checks else None
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "seeds"}), flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "nsgd_table.json"), "w") as f:
    json.dump(rows, f, indent=1)
  return rows


def sharpness_keys(seeds: list[dict]) -> list[str]:
  return sorted({k for s in seeds for k in s if k.startswith("sharpness ")})


def read_rows(path: str) -> list[dict]:
  rows = tf_flags.json_from_flag("from_json", path)
  if (not isinstance(rows, list) or not rows or rows[0].get("run") != "SGD"
      or not all("seeds" in r for r in rows)):
    raise app.UsageError(f"--from_json={path}: not an nsgd_table.json of this script "
                         "(a list of rows, SGD first, each with 'seeds')")
  return rows


def main(argv):
  del argv
  rows = read_rows(FLAGS.from_json) if FLAGS.from_json else trained_rows()
  print_table(rows)
  print_seeds(rows)
  print_seed_sharpness(rows)
  if FLAGS.plot or not FLAGS.from_json:
    plot(rows, FLAGS.plot or os.path.join(FLAGS.out, "nsgd_table.png"))


def print_table(rows: list[dict]) -> None:
  fmt = lambda ms, p=2: "—" if ms is None else f"{ms[0]:.{p}f} ± {ms[1]:.{p}f}"
  print(f"| run | reached loss {FLAGS.target_loss:g} | steps | lambda_max "
        "| lambda_max / SGD's (same seed) | test accuracy "
        "| distance from init | step in top-K span | projection check (max rel. dev.) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    check = r["projection_check_max_rel_deviation"]
    print(f"| {r['run']} | {r['reached']}/{len(r['seeds'])} | {fmt(r['steps'], 0)} | "
          f"{fmt(r['lambda_max'], 1)} | {fmt(r['lambda_max_over_sgd'])} | "
          f"{fmt(r['test_accuracy'], 3)} | "
          f"{fmt(r['distance_from_init'])} | {fmt(r['step_fraction'], 3)} | "
          f"{'—' if check is None else f'{check:.1e}'} |")
  keys = sharpness_keys([s for r in rows for s in r["seeds"]])
  if keys:  # at the stop, beside lambda_max and test accuracy
    print("\n" + tables.header(["run", "lambda_max", *keys, "test accuracy"]))
    for r in rows:
      cells = ["—" if r.get(k) is None else f"{r[k][0]:.3g} ± {r[k][1]:.2g}" for k in keys]
      print(f"| {r['run']} | {fmt(r['lambda_max'], 1)} | {' | '.join(cells)} | "
            f"{fmt(r['test_accuracy'], 3)} |")


def print_seeds(rows: list[dict]) -> None:
  """One line per run and seed, paired with SGD from the same seed."""
  sgd = {s["seed"]: s for s in rows[0]["seeds"]}
  per_epoch = FLAGS.train_size // FLAGS.batch_size  # training's whole steps per epoch
  print("\n" + tables.header(
      ["run", "seed", f"reached loss {FLAGS.target_loss:g}", "steps", "epochs", "lambda_max",
       "/ SGD's", "test accuracy", "- SGD's", "distance from init", "gradient fraction r",
       f"lambda_max from step {FLAGS.range_from}"]))
  for r in rows:
    for s in r["seeds"]:
      ref = None if r is rows[0] else sgd.get(s["seed"])
      t = s["trajectory"]
      late = [v for step, v in zip(t["steps"], t["lambda_max"]) if step >= FLAGS.range_from]
      ratio = tables.MISSING if ref is None else f"{s['lambda_max'] / ref['lambda_max']:.2f}"
      diff = (tables.MISSING if ref is None
              else f"{s['test_accuracy'] - ref['test_accuracy']:+.4f}")
      print(f"| {r['run']} | {s['seed']} | {'yes' if s['reached'] else 'no'} | {s['steps']} | "
            f"{s['steps'] / per_epoch:.1f} | {s['lambda_max']:.1f} | {ratio} | "
            f"{s['test_accuracy']:.4f} | {diff} | {s['distance_from_init']:.2f} | "
            f"{tables.fixed(s['gradient_fraction'], 2)} | "
            f"{tables.span(min(late, default=None), max(late, default=None))} |")


def print_seed_sharpness(rows: list[dict]) -> None:
  """The sharpness measures at the stop, one line per run and seed."""
  keys = sharpness_keys([s for r in rows for s in r["seeds"]])
  if not keys:
    return
  print("\n" + tables.header(["run", "seed", "lambda_max", *keys, "test accuracy"]))
  for r in rows:
    for s in r["seeds"]:
      cells = [tables.MISSING if s.get(k) is None else f"{s[k]:.4g}" for k in keys]
      print(f"| {r['run']} | {s['seed']} | {s['lambda_max']:.1f} | {' | '.join(cells)} | "
            f"{s['test_accuracy']:.4f} |")


def plot(rows, path):
  """lambda_max against step and against training loss, one line per seed."""
  plt = plotting.pyplot()
  if plt is None:
    return
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for i, row in enumerate(rows):
    for j, seed in enumerate(row["seeds"]):
      t = seed["trajectory"]
      label = f"{row['run']} ({len(row['seeds'])} seeds)" if j == 0 else None
      axes[0].plot(t["steps"], t["lambda_max"], color=f"C{i}", alpha=0.8, label=label)
      axes[1].plot(t["train_loss"], t["lambda_max"], color=f"C{i}", alpha=0.8, label=label)
      axes[1].plot(t["train_loss"][-1:], t["lambda_max"][-1:], "o", color=f"C{i}")
  axes[0].set_xlabel("step")
  axes[0].set_title("λ_max along training")
  plotting.equal_loss_axis(axes[1], FLAGS.target_loss)
  axes[1].set_title(f"at equal training loss ({FLAGS.target_loss:g}, dotted)")
  for ax in axes:
    ax.set_ylabel("λ_max")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"plot: {path}")


def run() -> None:
  tf_flags.run(main, __name__)


if __name__ == "__main__":
  run()
