"""A walk with SGD (Xing et al. 2018): how often does an SGD step cross a
valley floor?

Trains SimpleCNN with SGD at each learning rate and, over a window of steps,
interpolates the loss (on a fixed slice of the training set) between
consecutive iterates theta_t -> theta_{t+1}.  Reports the fraction of steps
whose curve has an interior minimum (the step crosses the valley floor), the
mean position of the minimum and the fraction of convex curves.

    python scripts/walk_with_sgd.py --dataset=../shared/data/cifar10-jpeg.tar.gz \
        --learning_rates=0.01,0.1 --window=100:200

Every run checkpoints; rerunning the same command reuses finished runs and
continues unfinished ones.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness import reuse, training  # noqa: E402
from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.experiments import walk  # noqa: E402

flags_lib.define_config_flags(
    lower_bounds={"train_size": 10, "batch_size": 1, "landscape_size": 1, "walk_points": 3},
    dataset=..., train_size=5000, batch_size=..., landscape_size=..., walk_points=...,
    model=...)
flags.DEFINE_list("learning_rates", ["0.01", "0.1"], "SGD learning rates.")
flags.DEFINE_string("window", "100:200", "START:END steps that are interpolated.")
flags.DEFINE_string("out", "runs/walk_with_sgd", "Output folder.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  try:
    training.Config(walk_steps=FLAGS.window).walk_window()
  except training.ConfigError:
    raise app.UsageError(f"--window must be START:END with 0 <= START < END, got "
                         f"{FLAGS.window!r}") from None
  summary = []
  for lr in (float(v) for v in FLAGS.learning_rates):
    cfg = walk.config(lr, FLAGS.window, FLAGS.out, dataset=FLAGS.dataset,
                      train_size=FLAGS.train_size, model=FLAGS.model,
                      batch_size=FLAGS.batch_size, walk_points=FLAGS.walk_points,
                      landscape_size=FLAGS.landscape_size)
    row = walk.summarize(reuse.train_or_reuse(cfg), lr)
    summary.append(row)
    print(json.dumps(row), flush=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "walk.json"), "w") as f:
    json.dump(summary, f, indent=1)


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
