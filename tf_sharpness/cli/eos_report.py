r"""The runs of an ``eos.py`` --json, step by step.

The driver prints each run's late ratio; the page also quotes where
sharpness was at given steps, how low it fell after the start, whether the
loss ever rose, when it fell below a level, and how sharpness moved over
stretches of steps.  This prints them from the JSON (committed beside the
results), with no run folder needed:

* per run: the threshold 2 (1 + beta) / eta, lambda_0, the smallest
  lambda_max after the first measurement and its step, lambda_max and the
  loss at each of --at_steps (the last record at or before the step; a
  loss logged at another step says which), the last logged loss,
  how many times the loss rose from one record to the next, and the first
  step with loss < --loss_below; the last lambda_max and its ratio to 2 / eta
  and to 2 (1 + beta) / eta;
* with --windows A:B (steps): ``trajectory.window`` of lambda_max (mean,
  range, counts above 2 (1 + beta) / eta and above 2 / eta, least-squares
  slope per step), and the change from its first to its last measurement.

  python scripts/eos_report.py --json=docs/results/eos.json --at_steps=100,2000 \
      --windows=100:2000
"""



from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as tf_flags  # noqa: E402
from tf_sharpness.experiments import eos  # noqa: E402

flags.DEFINE_string("json", None, "The --json of eos.py.", required=True)
tf_flags.define_list("steps", "at_steps", "Steps at which to give lambda_max and the loss.")
flags.DEFINE_float("loss_below", 1e-3, "Report the first step with a loss below this.")
tf_flags.define_list("windows", "windows", "Stretches of steps A:B to tabulate per run.")
FLAGS = flags.FLAGS


def read_runs(path: str) -> list[dict]:
  runs = eos.runs_of(tf_flags.json_from_flag("json", path))
  if runs is None:
    raise app.UsageError(f"--json={path}: not a --json of eos.py "
                         f"(a list of runs with "
                         f"{', '.join(sorted(eos.RUN_KEYS))})")
  return runs


def main(argv):
  del argv
  runs = read_runs(FLAGS.json)
  print(eos.runs_table(runs, FLAGS.at_steps, FLAGS.loss_below))
  if FLAGS.windows:
    print("\n" + eos.windows_table(runs, FLAGS.windows))


def run() -> None:
  tf_flags.run(main, __name__)


if __name__ == "__main__":
  run()
