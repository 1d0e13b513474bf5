"""A walk with SGD (Xing et al. 2018): how often does an SGD step cross a
valley floor, and what do the learning rate and the batch size change?

Trains SimpleCNN with SGD at every learning rate x batch size x seed and,
over each window of steps, interpolates the loss (on a fixed slice of the
training set) between consecutive iterates theta_t -> theta_{t+1}.  Reports
per run and window the fraction of steps whose curve has an interior minimum
(the step crosses the valley floor), the mean position of the minimum, the
fraction of convex curves, the cosine of consecutive minibatch gradients,
the height above the floor and the distance from the initialization; then
mean +- std over seeds and each factor's paired effect with its 95%
t-interval (tf_sharpness/experiments/walk.py).

    tf-sharpness walk --dataset=../shared/data/cifar10-jpeg.tar.gz \
        --learning_rates=0.02,0.1 --batch_sizes=32,512 --seeds=0,1,2 \
        --walk_steps=100:160,1000:1060

Every run checkpoints; rerunning the same command reuses finished runs and
continues unfinished ones.  `tf-sharpness report OUT/walk.json` prints the
tables again.
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
  print(walk.report(rows))


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
