"""Sharpness along the SGD trajectory vs learning rate and batch size
(Jastrzebski et al. 2019, Fig. 1), with seeds.

Two sweeps of plain SGD, every setting run once per seed in --seeds (the
seed sets the initialization and the data order):

* learning rate eta in --learning_rates at batch size --lr_sweep_batch, for
  --lr_epochs epochs each (one value for all, or one per learning rate:
  small learning rates need longer to reach their peak);
* batch size B in --batch_sizes at learning rate --batch_sweep_lr, all for
  the same number of optimizer steps (--batch_sweep_steps), so that they are
  compared at equal steps.

Every run measures the top-k Hessian eigenvalues (Lanczos, on
--hessian_fraction of the training set) and the training loss (on
--eval_size training examples): the learning-rate runs every
--measure_every_epochs epochs (so a run can be made longer later and
continue), the batch-size runs --measurements times along their steps.  Per
setting the driver reports, as mean +- std over seeds: the peak of
lambda_max and its epoch, the mean over the last quarter, and lambda_max
where the training loss first falls to or below --loss_threshold
(comparison at equal training loss).  With --loss_levels L_1 > ... > L_m
it also reports, per setting, lambda_max at each level and its mean over
the measurements in each band L_{k+1} < L <= L_k (trajectory.by_loss), and
the ratio of each to the first setting of its sweep (of the means over the
seeds both have, and its range seed by seed).  Writes --json (every
run) and a plot with two panels per sweep: lambda_max along the run (the
mean over seeds, with the band from the smallest to the largest seed, and
2/eta dashed for each learning rate), and every measurement against its
training loss with the band means.

Every run checkpoints; rerunning the same command skips finished runs and
continues unfinished ones from their last checkpoint.  A run trained longer
(a larger --lr_epochs with fewer --seeds) stays in the same folder: a sweep
with fewer epochs reads its first epochs.

    python scripts/sharpness_vs_lr_batch.py \\
        --dataset=../shared/data/cifar10-jpeg.tar.gz --seeds=0,1,2

Needs matplotlib for the plot (pip install -e ".[experiments]").
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.reports import plotting  # noqa: E402
from tf_sharpness.experiments import lr_batch_sweep  # noqa: E402
from tf_sharpness.cli import flags as flags_lib  # noqa: E402

flags_lib.define_config_flags(
    lower_bounds={"train_size": 10, "eval_size": 1},
    dataset=..., train_size=10000, hessian_fraction=0.025, model=..., eval_size=...)
flags.DEFINE_list("seeds", ["0"], "Seeds; every setting runs once per seed.")
flags.DEFINE_list("learning_rates", ["0.1", "0.01", "0.001"],
                  "Learning rates of the first sweep.")
flags.DEFINE_integer("lr_sweep_batch", 128, "Batch size of the learning-rate sweep.",
                     lower_bound=1)
flags.DEFINE_list("lr_epochs", ["20"],
                  "Epochs of the learning-rate sweep: one value, or one per learning rate.")
flags.DEFINE_list("batch_sizes", ["128", "1024"], "Batch sizes of the second sweep.")
flags.DEFINE_float("batch_sweep_lr", 0.05, "Learning rate of the batch-size sweep.")
flags.DEFINE_integer("batch_sweep_steps", 1560,
                     "Optimizer steps of every batch-size run (equal steps).",
                     lower_bound=1)
flags.DEFINE_float("measure_every_epochs", 1.0,
                   "Epochs between measurements of the learning-rate runs.", lower_bound=0)
flags.DEFINE_integer("measurements", 20, "Measurements per batch-size run (plus the end).",
                     lower_bound=1)
flags.DEFINE_float("loss_threshold", 1.0,
                   "Training loss at which the runs are also compared.")
flags.DEFINE_list("loss_levels", [],
                  "Training losses, decreasing, at which the runs are also compared "
                  "(lambda_max at each level and averaged over the band between levels); "
                  "empty: only --loss_threshold.")
flags.DEFINE_integer("top_k", 1, "Eigenvalues per measurement.", lower_bound=1)
flags.DEFINE_string("out", "runs/sharpness_vs_lr_batch", "Output folder.")
flags.DEFINE_string("plot", "", "PNG path of the plot (default OUT/sharpness.png).")
flags.DEFINE_string("json", "", "Path of the JSON with every run (default OUT/sharpness.json).")
FLAGS = flags.FLAGS


def settings() -> lr_batch_sweep.Settings:
  """The flags as the experiment's settings (its errors name the flags)."""
  def numbers(name, kind=float):
    try:
      return tuple(kind(v) for v in FLAGS[name].value)
    except ValueError:
      raise app.UsageError(f"--{name} must be numbers, got {FLAGS[name].value}") from None
  try:
    return lr_batch_sweep.Settings(
        dataset=FLAGS.dataset, model=FLAGS.model, train_size=FLAGS.train_size,
        eval_size=FLAGS.eval_size, hessian_fraction=FLAGS.hessian_fraction,
        seeds=numbers("seeds", int), learning_rates=numbers("learning_rates"),
        lr_sweep_batch=FLAGS.lr_sweep_batch, lr_epochs=numbers("lr_epochs"),
        batch_sizes=numbers("batch_sizes", int), batch_sweep_lr=FLAGS.batch_sweep_lr,
        batch_sweep_steps=FLAGS.batch_sweep_steps,
        measure_every_epochs=FLAGS.measure_every_epochs, measurements=FLAGS.measurements,
        loss_threshold=FLAGS.loss_threshold, loss_levels=numbers("loss_levels"),
        top_k=FLAGS.top_k, out=FLAGS.out)
  except ValueError as e:
    raise app.UsageError(flags_lib.as_flags(str(e))) from None


def main(argv):
  del argv
  sweep = settings()
  results = []
  for setting in sweep.settings():
    entry = lr_batch_sweep.run_setting(sweep, setting)
    results.append(entry)
    fmt = lr_batch_sweep.pm
    print(f"{setting.name}: peak lambda_max {fmt(entry['peak_lambda_max'])} at epoch "
          f"{fmt(entry['peak_epoch'])}; late mean {fmt(entry['late_mean_lambda_max'])};"
          f" at training loss {FLAGS.loss_threshold:g}: "
          f"{fmt(entry['lambda_max_at_loss_threshold'])}", flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(FLAGS.json or os.path.join(FLAGS.out, "sharpness.json"), "w") as f:
    json.dump(results, f)
  print(lr_batch_sweep.table(results, FLAGS.loss_threshold))
  if sweep.loss_levels:
    print("\n" + lr_batch_sweep.loss_table(results, list(sweep.loss_levels)))
  plot(results, FLAGS.plot or os.path.join(FLAGS.out, "sharpness.png"))


def setting_label(r):
  """The legend entry of one setting: what its sweep varies, and its seeds."""
  varied = (f"η = {r['learning_rate']:g}" if r["sweep"] == "learning rate"
            else f"B = {r['batch_size']}")
  return f"{varied} ({len(r['runs'])} seeds)"


def plot(results, path):
  plt = plotting.pyplot()
  if plt is None:
    return
  sweeps = list(dict.fromkeys(r["sweep"] for r in results))
  fig, axes = plt.subplots(len(sweeps), 2, figsize=(11, 4 * len(sweeps)), squeeze=False)
  for (ax, ax_loss), sweep in zip(axes, sweeps):
    for i, r in enumerate(x for x in results if x["sweep"] == sweep):
      x_key = "epochs" if sweep == "learning rate" else "steps"
      x, mean, low, high = lr_batch_sweep.band(r["runs"], x_key, "lambda_max")
      ax.plot(x, mean, color=f"C{i}", label=setting_label(r))
      ax.fill_between(x, low, high, color=f"C{i}", alpha=0.25)
      if sweep == "learning rate":
        ax.axhline(2 / r["learning_rate"], color=f"C{i}", linestyle="--", linewidth=1)
    ax.set_xlabel("epoch" if sweep == "learning rate" else "step")
    ax.set_ylabel("λ_max (mean; band: min to max over seeds)")
    ax.set_yscale("log")
    ax.set_title(f"{sweep} sweep" + (" (dashed: 2/η)" if sweep == "learning rate" else ""))
    ax.legend(fontsize=8)
    plot_at_equal_loss(ax_loss, [r for r in results if r["sweep"] == sweep])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"plot: {path}")


def plot_at_equal_loss(ax, settings):
  """One sweep's settings against the training loss: every measurement as a
  point and, with --loss_levels, the mean over seeds in each loss band as a
  segment."""
  for i, r in enumerate(settings):
    pts = [(l, t) for run in r["runs"]
           for l, t in zip(run["train_loss"], run["lambda_max"]) if l is not None]
    ax.scatter(*zip(*pts), s=9, color=f"C{i}", alpha=0.45, label=setting_label(r))
    if "by_loss" in r:
      levels = r["by_loss"]["levels"]
      for k, (mean, _) in enumerate(r["by_loss"]["band_mean"]):
        if mean is not None:
          ax.plot([levels[k], levels[k + 1]], [mean, mean], color=f"C{i}", linewidth=2.5,
                  label="mean over seeds in each band" if k == 0 and i == 0 else None)
  plotting.equal_loss_axis(ax, FLAGS.loss_threshold)
  ax.set_ylabel("λ_max")
  ax.set_yscale("log")
  ax.set_title(f"{settings[0]['sweep']} sweep at equal training loss")
  ax.legend(fontsize=8)


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
