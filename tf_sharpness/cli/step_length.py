"""Is the SGD step too large along the sharpest direction?  (Jastrzebski et
al. 2019; tf_sharpness.experiments.step_length.)

    python scripts/step_length.py --dataset=../shared/data/cifar10-jpeg.tar.gz \\
        --learning_rates=0.01 --seeds=0,1,2 --out=runs/reproductions/step_length

Rerunning continues unfinished runs and reuses finished ones.  Prints a
table per run and over seeds, and one per measurement step; writes
OUT/step_length.json.  --from_json=PATH prints the tables of such a JSON.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.errors import ConfigError  # noqa: E402
from tf_sharpness.experiments import step_length  # noqa: E402

flags_lib.define_settings_flags(step_length.Settings)
flags.DEFINE_string("from_json", "", "Print the tables of this step_length.json instead "
                    "of training.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.from_json:
    try:
      result = step_length.Result.from_json(flags_lib.json_from_flag("from_json",
                                                                     FLAGS.from_json))
    except (ValueError, KeyError, TypeError) as e:
      raise app.UsageError(f"--from_json={FLAGS.from_json}: {e}") from None
  else:
    try:
      settings = flags_lib.settings_from_flags(step_length.Settings)
    except ConfigError as e:
      raise app.UsageError(str(e)) from None
    result = step_length.run(settings)
    os.makedirs(settings.out, exist_ok=True)
    with open(os.path.join(settings.out, "step_length.json"), "w") as f:
      json.dump(result.to_json(), f, indent=1)
  print(step_length.table(result))
  print()
  print(step_length.trajectory_table(result))
  return 0


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
