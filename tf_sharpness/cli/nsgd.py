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

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as tf_flags  # noqa: E402
from tf_sharpness.reports import plotting  # noqa: E402
from tf_sharpness.experiments import nsgd_table  # noqa: E402

tf_flags.define_config_flags(
    lower_bounds={"train_size": 10, "eval_size": 1, "batch_size": 1},
    dataset=..., train_size=5000, eval_size=..., learning_rate=..., batch_size=...,
    model=..., hessian_fraction=...)
tf_flags.define_list("positive_numbers", "gammas", "NSGD gammas (SGD is always run).",
                     default=[0.01, 0.1, 5.0])
tf_flags.define_list("positive_numbers", "sgd_learning_rates",
                     "More SGD runs at these learning rates (Table 1's control: plain SGD "
                     "with a smaller step), beside SGD at --learning_rate.")
tf_flags.define_list("positive_numbers", "sam_rhos",
                     "SAM radii: one SGD+SAM run per rho (Foret et al. 2021).")
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
tf_flags.define_list("loss_levels", "paired_losses",
                     "Also compare every run with SGD from the same seed where both first "
                     "reached these training losses (decreasing, e.g. 1.5), beside "
                     "--target_loss: paired 95% t-intervals over seeds.")
flags.DEFINE_integer("range_from", 200, "The per-seed table gives the range of lambda_max "
                     "from this step on.", lower_bound=0)
FLAGS = flags.FLAGS


def settings() -> nsgd_table.Settings:
  return nsgd_table.Settings(
      dataset=FLAGS.dataset, model=FLAGS.model, train_size=FLAGS.train_size,
      eval_size=FLAGS.eval_size, learning_rate=FLAGS.learning_rate,
      batch_size=FLAGS.batch_size, hessian_fraction=FLAGS.hessian_fraction,
      gammas=tuple(FLAGS.gammas), sgd_learning_rates=tuple(FLAGS.sgd_learning_rates),
      sam_rhos=tuple(FLAGS.sam_rhos),
      sharpness_measures=tuple(FLAGS.sharpness_measures), sharpness_rho=FLAGS.sharpness_rho,
      seeds=tuple(int(s) for s in FLAGS.seeds), target_loss=FLAGS.target_loss,
      max_steps=FLAGS.max_steps, top_k=FLAGS.top_k, refresh_every=FLAGS.refresh_every,
      out=FLAGS.out)


def trained() -> nsgd_table.Result:
  """Every optimizer over the seeds, trained (or reused); the JSON is
  written to OUT/nsgd_table.json."""
  result = nsgd_table.run(settings(), on_row=lambda row: print(
      json.dumps({k: v for k, v in row.items() if k != "seeds"}), flush=True))
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "nsgd_table.json"), "w") as f:
    json.dump(result.to_json(), f, indent=1)
  return result


def read_result(path: str) -> nsgd_table.Result:
  try:
    return nsgd_table.Result.from_json(tf_flags.json_from_flag("from_json", path))
  except ValueError as e:
    raise app.UsageError(f"--from_json={path}: {e}") from None


def main(argv):
  del argv
  result = read_result(FLAGS.from_json) if FLAGS.from_json else trained()
  print(nsgd_table.table(result, FLAGS.target_loss))
  # training's whole steps per epoch
  print("\n" + nsgd_table.seeds_table(result, FLAGS.target_loss,
                                      FLAGS.train_size // FLAGS.batch_size, FLAGS.range_from))
  levels = sorted(set(FLAGS.paired_losses) | {FLAGS.target_loss}, reverse=True)
  print("\n" + nsgd_table.paired_table(result, levels))
  per_seed = nsgd_table.seed_sharpness_table(result)
  if per_seed:
    print("\n" + per_seed)
  if FLAGS.plot or not FLAGS.from_json:
    plot(result.rows, FLAGS.plot or os.path.join(FLAGS.out, "nsgd_table.png"))


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
