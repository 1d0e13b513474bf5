"""Edge of stability (Cohen et al. 2021): full-batch GD, sharpness vs 2/eta.

Runs the shipped flagfile eos.cfg (tanh FCN 2x200, MSE, full batch)
for several learning rates (and heavy-ball momentum), then reports for each
run the late-time ratio lambda_max / threshold with threshold
2 (1 + beta) / eta, averaged over the last --late_fraction of the
measurements, writes a JSON summary and a plot.

    python scripts/eos.py --dataset=../shared/data/cifar10-jpeg.tar.gz \
        --learning_rates=0.01,0.02,0.04 --momentum_runs=0.01:0.9 --steps=3000

Needs matplotlib for the plot (pip install -e ".[experiments]").
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.experiments import eos  # noqa: E402

flags_lib.define_settings_flags(eos.Settings)
flags.DEFINE_string("plot", "", "PNG path of the plot (default OUT/eos.png).")
flags.DEFINE_string("json", "", "Path of the JSON of every run (default OUT/eos.json); "
                    "`tf-sharpness report` reads it.")
FLAGS = flags.FLAGS


def show(r: dict, records: list[dict]) -> None:
  if r["diverged"]:
    print(f"{r['run']}: threshold {r['threshold']:.1f}; diverged at step "
          f"{records[-1]['step']} (lambda_0 = {r['initial_sharpness']:.1f}, eta*lambda_0 = "
          f"{r['learning_rate'] * r['initial_sharpness']:.1f})", flush=True)
  else:
    print(f"{r['run']}: threshold 2(1+beta)/eta = {r['threshold']:.1f}, lambda_max from "
          f"{r['initial_sharpness']:.2f} to late mean {r['late_ratio'] * r['threshold']:.2f}: "
          f"ratio {r['late_ratio']:.3f}", flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  settings = flags_lib.settings_from_flags(eos.Settings)
  results = eos.run(settings, flags_lib.shipped_config("eos"), on_run=show)
  os.makedirs(settings.out, exist_ok=True)
  with open(FLAGS.json or os.path.join(settings.out, "eos.json"), "w") as f:
    json.dump(eos.to_json(settings, results), f)
  path = eos.figure(results, FLAGS.plot or os.path.join(settings.out, "eos.png"))
  if path:
    print(f"plot: {path}")


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
