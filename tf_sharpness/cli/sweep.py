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

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from tf_sharpness import training  # noqa: E402
from tf_sharpness import plotting  # noqa: E402
from tf_sharpness import trajectory  # noqa: E402
from tf_sharpness.experiments import seeds as seeds_lib  # noqa: E402
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


def settings():
  """(sweep, name, learning rate, batch size, steps, steps between
  measurements) of every setting."""
  epochs = [float(e) for e in FLAGS.lr_epochs]
  if len(epochs) not in (1, len(FLAGS.learning_rates)):
    raise app.UsageError("--lr_epochs needs one value or one per --learning_rates")
  out = []
  for i, lr in enumerate(FLAGS.learning_rates):
    b = FLAGS.lr_sweep_batch
    per_epoch = FLAGS.train_size // b
    steps = max(1, round(epochs[i if len(epochs) > 1 else 0] * per_epoch))
    every = max(1, round(FLAGS.measure_every_epochs * per_epoch))
    out.append(("learning rate", f"lr{float(lr):g}_b{b}", float(lr), b, steps, every))
  for b in (int(b) for b in FLAGS.batch_sizes):
    out.append(("batch size", f"lr{FLAGS.batch_sweep_lr:g}_b{b}", FLAGS.batch_sweep_lr,
                b, FLAGS.batch_sweep_steps,
                max(1, FLAGS.batch_sweep_steps // FLAGS.measurements)))
  return out


def run_one(name, lr, batch, steps, every, seed):
  """Trains one run (or reuses / continues it); returns its records."""
  if FLAGS.train_size // batch < 1:
    raise app.UsageError(f"--train_size={FLAGS.train_size} is smaller than batch {batch}")
  cfg = training.Config(
      dataset=FLAGS.dataset, train_size=FLAGS.train_size, model=FLAGS.model,
      optimizer="sgd", learning_rate=lr, batch_size=batch, steps=steps,
      spectrum_every=every, spectrum_k=FLAGS.top_k,
      hessian_fraction=FLAGS.hessian_fraction, eval_every=every,
      eval_size=FLAGS.eval_size, log_every=every, seed=seed,
      checkpoint_every=every, logdir=os.path.join(FLAGS.out, f"{name}_seed{seed}"))
  logging.info("run %s seed %d: eta %g, batch %d, %d steps", name, seed, lr, batch, steps)
  return training.train_or_reuse(cfg)


def mean_std(values):
  """(mean, std) over seeds; (None, None) when no seed has a value."""
  return tuple(seeds_lib.mean_std(values) or (None, None))


def loss_levels():
  try:
    levels = [float(l) for l in FLAGS.loss_levels]
  except ValueError:
    raise app.UsageError(f"--loss_levels must be numbers, got {FLAGS.loss_levels}")
  if any(b >= a for a, b in zip(levels, levels[1:])):
    raise app.UsageError(f"--loss_levels must decrease strictly, got {FLAGS.loss_levels}")
  return levels


def over_seeds_by_loss(runs, levels):
  """Per level and per band: mean +- std over the seeds that have a value,
  and how many do (a band's measurements are counted over all seeds)."""
  return {"levels": levels,
          "at_level": [mean_std([r["by_loss"]["at_level"][k] for r in runs])
                       for k in range(len(levels))],
          "seeds_at_level": [sum(r["by_loss"]["at_level"][k] is not None for r in runs)
                             for k in range(len(levels))],
          "band_mean": [mean_std([r["by_loss"]["band_mean"][k] for r in runs])
                        for k in range(len(levels) - 1)],
          "band_count": [sum(r["by_loss"]["band_count"][k] for r in runs)
                         for k in range(len(levels) - 1)],
          "seeds_in_band": [sum(r["by_loss"]["band_count"][k] > 0 for r in runs)
                            for k in range(len(levels) - 1)]}


def main(argv):
  del argv
  seeds = [int(s) for s in FLAGS.seeds]
  levels = loss_levels()
  results = []
  for sweep, name, lr, batch, steps, every in settings():
    runs = []
    for seed in seeds:
      row = trajectory.summarize(run_one(name, lr, batch, steps, every, seed),
                                 FLAGS.train_size // batch, FLAGS.loss_threshold)
      if levels:
        row["by_loss"] = trajectory.by_loss(row, levels)
      runs.append({"seed": seed, **row})
    setting = {"sweep": sweep, "run": name, "learning_rate": lr, "batch_size": batch,
               "steps": steps, "seeds": seeds, "runs": runs}
    for key in ("peak_lambda_max", "peak_epoch", "late_mean_lambda_max",
                "lambda_max_at_loss_threshold", "step_at_loss_threshold",
                "final_train_loss", "test_accuracy"):
      setting[key] = mean_std([r[key] for r in runs])
    if levels:
      setting["by_loss"] = over_seeds_by_loss(runs, levels)
    results.append(setting)
    fmt = lambda ms: "—" if ms[0] is None else f"{ms[0]:.1f} ± {ms[1]:.1f}"
    print(f"{name}: peak lambda_max {fmt(setting['peak_lambda_max'])} at epoch "
          f"{fmt(setting['peak_epoch'])}; late mean {fmt(setting['late_mean_lambda_max'])};"
          f" at training loss {FLAGS.loss_threshold:g}: "
          f"{fmt(setting['lambda_max_at_loss_threshold'])}", flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(FLAGS.json or os.path.join(FLAGS.out, "sharpness.json"), "w") as f:
    json.dump(results, f)
  print_table(results)
  if levels:
    print_loss_table(results, levels)
  plot(results, FLAGS.plot or os.path.join(FLAGS.out, "sharpness.png"))


def print_table(results):
  fmt = lambda ms, p=1: "—" if ms[0] is None else f"{ms[0]:.{p}f} ± {ms[1]:.{p}f}"
  print(f"| sweep | eta | B | steps | peak lambda_max | epoch of peak | late mean "
        f"lambda_max | lambda_max at loss {FLAGS.loss_threshold:g} | step reaching it | "
        "final train loss | test accuracy | runs that peaked |")
  print("| --- " * 12 + "|")
  for r in results:
    peaked = sum(run["peaked"] for run in r["runs"])
    print(f"| {r['sweep']} | {r['learning_rate']:g} | {r['batch_size']} | {r['steps']} | "
          f"{fmt(r['peak_lambda_max'])} | {fmt(r['peak_epoch'])} | "
          f"{fmt(r['late_mean_lambda_max'])} | {fmt(r['lambda_max_at_loss_threshold'])} | "
          f"{fmt(r['step_at_loss_threshold'], 0)} | {fmt(r['final_train_loss'], 3)} | "
          f"{fmt(r['test_accuracy'], 3)} | "
          f"{peaked}/{len(r['runs'])} |")


def print_loss_table(results, levels):
  """lambda_max at each loss level and in each band, with the ratio to the
  first setting of the same sweep: the ratio of the means over the seeds
  that have a value in both, and in brackets the smallest and largest ratio
  of one seed's run to the same seed's run in the first setting (the seed
  sets the initialization)."""
  fmt = lambda ms: "—" if ms[0] is None else f"{ms[0]:.1f} ± {ms[1]:.1f}"
  print("\n| sweep | eta | B | training loss L | lambda_max at L | seeds at L | "
        "ratio of means (per seed) | band below L | lambda_max in band | "
        "measurements (seeds) | ratio of means (per seed) |")
  print("| --- " * 11 + "|")
  first = {}
  for r in results:
    ref = first.setdefault(r["sweep"], r)
    b = r["by_loss"]
    ratio = lambda key, k: ratio_cell(r, ref, key, k)
    for k, level in enumerate(levels):
      row = (f"| {r['sweep']} | {r['learning_rate']:g} | {r['batch_size']} | {level:g} | "
             f"{fmt(b['at_level'][k])} | {b['seeds_at_level'][k]}/{len(r['runs'])} | "
             f"{ratio('at_level', k)} | ")
      if k + 1 < len(levels):
        row += (f"({levels[k + 1]:g}, {level:g}] | {fmt(b['band_mean'][k])} | "
                f"{b['band_count'][k]} ({b['seeds_in_band'][k]}/{len(r['runs'])}) | "
                f"{ratio('band_mean', k)} |")
      else:
        row += "| | | |"
      print(row)


def ratio_cell(setting, ref, key, k):
  """'ratio of means (min–max per seed)' of by_loss[key][k] against ref."""
  per_seed = lambda r: {run["seed"]: run["by_loss"][key][k] for run in r["runs"]}
  paired = trajectory.paired_ratio(per_seed(setting), per_seed(ref))
  if paired is None:
    return "—"
  ratio, ratios = paired
  spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
  return f"{ratio:.2f}{spread}"


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
      x, mean, low, high = band(r["runs"], x_key, "lambda_max")
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


def band(runs, x_key, y_key):
  """Mean, minimum and maximum over seeds at the x values all runs share."""
  common = sorted(set.intersection(*(set(r[x_key]) for r in runs)))
  ys = np.array([[dict(zip(r[x_key], r[y_key]))[x] for x in common] for r in runs])
  return np.array(common), ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
