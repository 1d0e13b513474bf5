"""Measure saved runs again at their last checkpoint: lambda_max on every
training example (or --examples of them), beside the run's own Hessian
subsample and the interval from it.  (tf_sharpness.saved_run.)

    tf-sharpness measure --logdirs=runs/reproductions/edge_quantities/lr0.01_seed0 \\
        --json=edge_full_data.json

Prints a table and writes --json (a list, one entry per run).
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness import saved_run  # noqa: E402
from tf_sharpness.cli import flags as flags_lib  # noqa: E402

flags_lib.define_settings_flags(saved_run.Settings)
flags.DEFINE_string("json", "", "Path of the JSON of every run's measurement (none when empty).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  settings = flags_lib.settings_from_flags(saved_run.Settings)
  results = []
  for logdir in settings.logdirs:
    run = saved_run.load(logdir, settings.dataset)
    print(f"{logdir}: step {run.step}, {len(run.data.train_y)} training examples", flush=True)
    results.append(saved_run.measure(run, examples=settings.examples,
                                     confidence=settings.confidence,
                                     batches=settings.batches, tol=settings.tol))
    print(json.dumps(results[-1]), flush=True)
    if FLAGS.json:
      with open(FLAGS.json, "w") as f:
        json.dump(results, f, indent=1)
  print(saved_run.table(results))


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
