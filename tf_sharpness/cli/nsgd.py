"""NSGD steers sharpness (Jastrzebski et al. 2019, Table 1): SGD, NSGD per
gamma, smaller-step SGD and SAM, once per seed, to a target training loss;
the experiment, its summaries and tables are tf_sharpness/experiments/
nsgd_table.py.  Prints the table over seeds, every seed, the paired
comparisons (--paired_with, at --target_loss and --paired_losses) and writes
OUT/nsgd_table.json and a plot (matplotlib: pip install -e ".[experiments]").

    tf-sharpness nsgd --dataset=../shared/data/cifar10-jpeg.tar.gz \
        --gammas=0.01,0.1,5 --seeds=0,1,2 --target_loss=1.5

Rerunning reuses finished runs and continues unfinished ones; --add_to adds
new seeds to a committed JSON, --from_json reports one without training.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as tf_flags  # noqa: E402
from tf_sharpness.experiments import nsgd_table  # noqa: E402

tf_flags.define_settings_flags(nsgd_table.Settings)
flags.DEFINE_string("plot", "", "PNG path of the plot (default OUT/nsgd_table.png).")
flags.DEFINE_string("add_to", "", "Add the seeds trained now to this JSON of an earlier "
                    "call with the same settings (e.g. the committed "
                    "docs/results/nsgd_seeds8.json) and report them together; the merged "
                    "JSON is OUT/nsgd_table.json.")
flags.DEFINE_string("from_json", "", "Report this JSON of an earlier run (its "
                    "nsgd_table.json) instead of training; no plot unless --plot.  Its "
                    "settings come from the JSON (an older JSON without them takes "
                    "--target_loss, --train_size and --batch_size from the flags).")
tf_flags.define_list("loss_levels", "paired_losses",
                     "Also compare every run with SGD from the same seed where both first "
                     "reached these training losses (decreasing, e.g. 1.5), beside "
                     "--target_loss: paired 95% t-intervals over seeds.")
flags.DEFINE_list("paired_with", ["SGD"], "The runs every other run is paired with, one "
                  "paired table each (e.g. SGD,SGD eta=0.005: the smaller-step control).")
flags.DEFINE_integer("range_from", 200, "The per-seed table gives the range of lambda_max "
                     "from this step on.", lower_bound=0)
FLAGS = flags.FLAGS


def read_result(path: str, flag: str = "from_json") -> nsgd_table.Result:
  try:
    return nsgd_table.Result.from_json(tf_flags.json_from_flag(flag, path))
  except (ValueError, TypeError) as e:
    raise app.UsageError(f"--{flag}={path}: {e}") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.from_json and FLAGS.add_to:
    raise app.UsageError("--add_to trains new seeds: it cannot go with --from_json")
  if FLAGS.from_json:
    result = read_result(FLAGS.from_json)
  else:
    settings = tf_flags.settings_from_flags(nsgd_table.Settings)
    result = nsgd_table.run_adding(
        settings, read_result(FLAGS.add_to, "add_to") if FLAGS.add_to else None,
        on_row=lambda row: print(json.dumps({k: v for k, v in row.items() if k != "seeds"}),
                                 flush=True), source=FLAGS.add_to)
    os.makedirs(settings.out, exist_ok=True)
    with open(os.path.join(settings.out, "nsgd_table.json"), "w") as f:
      json.dump(result.to_json(), f, indent=1)
  s = result.settings or tf_flags.settings_from_flags(nsgd_table.Settings)
  try:
    print(nsgd_table.report(result, s, FLAGS.paired_losses, FLAGS.paired_with,
                            FLAGS.range_from))
  except ValueError as e:
    raise app.UsageError(f"--paired_with: {e}") from None
  if FLAGS.plot or not FLAGS.from_json:
    path = nsgd_table.figure(result, FLAGS.plot or os.path.join(s.out, "nsgd_table.png"),
                             s.target_loss)
    if path:
      print(f"plot: {path}")


def run() -> None:
  tf_flags.run(main, __name__)


if __name__ == "__main__":
  run()
