"""A walk with SGD (Xing et al. 2018): how often does an SGD step cross a
valley floor?

Trains SimpleCNN with SGD at each learning rate and, over a window of steps,
interpolates the loss (on a fixed slice of the training set) between
consecutive iterates theta_t -> theta_{t+1}.  Reports the fraction of steps
whose curve has an interior minimum (the step crosses the valley floor), the
mean position of the minimum and the fraction of convex curves.

    python scripts/walk_with_sgd.py --dataset=../shared/data/cifar10-jpeg.tar.gz \
        --learning_rates=0.01,0.1 --walk_steps=100:200

Every run checkpoints; rerunning the same command reuses finished runs and
continues unfinished ones.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.experiments import walk  # noqa: E402

flags_lib.define_settings_flags(walk.Settings)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  settings = flags_lib.settings_from_flags(walk.Settings)
  rows = walk.run(settings, on_row=lambda row: print(json.dumps(row), flush=True))
  os.makedirs(settings.out, exist_ok=True)
  with open(os.path.join(settings.out, "walk.json"), "w") as f:
    json.dump(walk.to_json(settings, rows), f, indent=1)
  print(walk.table(rows))


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
