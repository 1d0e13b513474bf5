r"""The runs of an ``edge_of_stability.py`` --json, step by step.

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
from tf_sharpness.reports import tables  # noqa: E402
from tf_sharpness.reports import trajectory  # noqa: E402

flags.DEFINE_string("json", None, "The --json of edge_of_stability.py.", required=True)
tf_flags.define_list("steps", "at_steps", "Steps at which to give lambda_max and the loss.")
flags.DEFINE_float("loss_below", 1e-3, "Report the first step with a loss below this.")
tf_flags.define_list("windows", "windows", "Stretches of steps A:B to tabulate per run.")
FLAGS = flags.FLAGS


def read_runs(path: str) -> list[dict]:
  runs = tf_flags.json_from_flag("json", path)
  needed = {"run", "learning_rate", "momentum", "steps", "sharpness", "loss"}
  if not isinstance(runs, list) or not all(isinstance(r, dict) and needed <= r.keys()
                                           for r in runs):
    raise app.UsageError(f"--json={path}: not a --json of edge_of_stability.py "
                         f"(a list of runs with {', '.join(sorted(needed))})")
  return runs


def as_summary(run: dict) -> dict:
  """The run in the shape ``trajectory.window`` reads (x = steps)."""
  loss = dict((int(s), l) for s, l in run["loss"])
  return {"steps": run["steps"], "epochs": None, "lambda_max": run["sharpness"],
          "train_loss": [loss.get(s) for s in run["steps"]]}


def value_at(pairs: list, step: int, end: int) -> tuple[int, float] | None:
  """The last (step, value) pair at or before ``step``; None past ``end``,
  the run's last step (the run ended before ``step``)."""
  before = [(s, v) for s, v in pairs if s <= step]
  return before[-1] if before and step <= end else None


def loss_rises(run: dict) -> int:
  losses = [l for _, l in run["loss"]]
  return sum(b > a for a, b in zip(losses, losses[1:]))


def _top(pair) -> str:
  return tables.MISSING if pair is None else f"{pair[1]:.1f}"


def _loss(pair, step=None) -> str:
  """A logged loss, with its step when it is not the one asked for (the
  driver logs the loss every few steps)."""
  if pair is None:
    return tables.MISSING
  return tables.significant(pair[1]) + ("" if pair[0] == step else f" (step {pair[0]})")


def print_runs(runs: list[dict], at_steps: list[int], below: float) -> None:
  print(tables.header(
      ["run", "2/eta", "2(1+beta)/eta", "lambda_0", "smallest lambda_max after the first",
       *(c for s in at_steps for c in (f"lambda_max at {s}", f"loss at {s}")),
       "last lambda_max", "its ratio to 2/eta", "to 2(1+beta)/eta", "last logged loss",
       "loss rises", f"first loss < {below:g}"]))
  for r in runs:
    plain = 2 / r["learning_rate"]
    threshold = plain * (1 + r["momentum"])
    sharp = list(zip(r["steps"], r["sharpness"]))
    head = (f"| {r['run']} | {plain:.1f} | {threshold:.1f} | "
            f"{_top(sharp[0] if sharp else None)} |")
    if r.get("diverged") or not sharp:
      print(head + f" diverged (last measurement at step {sharp[-1][0] if sharp else '—'}) |"
            + f" {tables.MISSING} |" * (2 * len(at_steps) + 6))
      continue
    low = min(sharp[1:], key=lambda p: p[1]) if len(sharp) > 1 else None
    first = next((s for s, l in r["loss"] if l < below), None)
    (end, last), logged = sharp[-1], (r["loss"][-1] if r["loss"] else None)
    print(head + (f" {low[1]:.1f} (step {low[0]}) |" if low else f" {tables.MISSING} |")
          + "".join(f" {_top(value_at(sharp, s, end))} | {_loss(value_at(r['loss'], s, end), s)} |"
                    for s in at_steps)
          + f" {last:.1f} (step {end}) | {last / plain:.3f} | {last / threshold:.3f} | "
          f"{_loss(logged)} | {loss_rises(r)} | {'never' if first is None else first} |")


def print_windows(runs: list[dict], windows: list[tuple[float, float]]) -> None:
  print("\n" + tables.header(
      ["run", "steps", "measurements", "mean lambda_max", "range", "above 2(1+beta)/eta",
       "above 2/eta", "slope per step", "change first to last"]))
  for r in runs:
    limits = {"momentum": 2 * (1 + r["momentum"]) / r["learning_rate"],
              "plain": 2 / r["learning_rate"]}
    summary = as_summary(r)
    for a, b in windows:
      w = trajectory.window(summary, a, b, limits)
      inside = [t for s, t in zip(r["steps"], r["sharpness"]) if a <= s <= b]
      change = (f"{100 * (inside[-1] / inside[0] - 1):+.2f}%"
                if len(inside) > 1 and inside[0] else tables.MISSING)
      print(f"| {r['run']} | {a:g}–{b:g} | {w['count']} | {tables.fixed(w['mean'], 1)} | "
            f"{tables.span(w['min'], w['max'])} | {w['above']['momentum']} | "
            f"{w['above']['plain']} | {tables.slope(w['slope'])} | {change} |")


def main(argv):
  del argv
  at_steps, windows = FLAGS.at_steps, FLAGS.windows
  runs = read_runs(FLAGS.json)
  print_runs(runs, at_steps, FLAGS.loss_below)
  if windows:
    print_windows(runs, windows)


def run() -> None:
  tf_flags.run(main, __name__)


if __name__ == "__main__":
  run()
