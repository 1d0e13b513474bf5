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

    python scripts/sweep.py \\
        --dataset=../shared/data/cifar10-jpeg.tar.gz --seeds=0,1,2

Needs matplotlib for the plot (pip install -e ".[experiments]").
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.experiments import sweep  # noqa: E402
from tf_sharpness.cli import flags as flags_lib  # noqa: E402

flags_lib.define_settings_flags(sweep.Settings)
flags.DEFINE_string("plot", "", "PNG path of the plot (default OUT/sharpness.png).")
flags.DEFINE_string("json", "", "Path of the JSON with every run (default OUT/sharpness.json).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  settings = flags_lib.settings_from_flags(sweep.Settings)
  results = []
  for setting in settings.settings():
    entry = sweep.run_setting(settings, setting)
    results.append(entry)
    fmt = sweep.pm
    print(f"{setting.name}: peak lambda_max {fmt(entry['peak_lambda_max'])} at epoch "
          f"{fmt(entry['peak_epoch'])}; late mean {fmt(entry['late_mean_lambda_max'])};"
          f" at training loss {settings.loss_threshold:g}: "
          f"{fmt(entry['lambda_max_at_loss_threshold'])}", flush=True)
  os.makedirs(settings.out, exist_ok=True)
  with open(FLAGS.json or os.path.join(settings.out, "sharpness.json"), "w") as f:
    json.dump(sweep.to_json(settings, results), f)
  print(sweep.table(results, settings.loss_threshold))
  if settings.loss_levels:
    print("\n" + sweep.loss_table(results, list(settings.loss_levels)))
  path = sweep.figure(results, FLAGS.plot or os.path.join(settings.out, "sharpness.png"),
                               settings.loss_threshold)
  if path:
    print(f"plot: {path}")


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
