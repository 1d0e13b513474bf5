"""Self-stabilization at the edge of stability (Damian et al. 2023): under
full-batch GD, does the oscillation along the top eigenvector align the
loss gradient with grad lambda_1?  (tf_sharpness.experiments.self_stabilization.)

    tf-sharpness self_stabilization --dataset=../shared/data/cifar10-jpeg.tar.gz \\
        --learning_rates=0.02,0.005 --seeds=0,1,2 --out=runs/reproductions/self_stabilization

Runs the shipped eos.cfg at each learning rate and seed.  Rerunning
continues unfinished runs and reuses finished ones.  Prints the table of
cos(grad lambda_1, g_perp), g_perp the loss gradient without its component
along the top eigenvector, at large and small oscillations; writes
OUT/self_stabilization.json (`tf-sharpness report` reads it).
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.experiments import self_stabilization  # noqa: E402

flags_lib.define_settings_flags(self_stabilization.Settings)
flags.DEFINE_string("plot", "", "PNG path of the plot (default OUT/self_stabilization.png; "
                    "matplotlib: pip install -e \".[experiments]\").")
FLAGS = flags.FLAGS


def show(run: dict) -> None:
  late = run["late"]
  if late is None:
    print(f"lr {run['learning_rate']:g} seed {run['seed']}: no late measurement", flush=True)
    return
  diff = late["large_minus_small"]
  print(f"lr {run['learning_rate']:g} seed {run['seed']}: lambda_1 / (2/eta) "
        f"{late['lambda_1_ratio']:.3f}, share of g along u {late['share_along_u']:.3g}, "
        f"cos(grad lambda_1, g_perp) {late['cosine_without_u']:+.3f}, large - small "
        f"oscillation {'-' if diff is None else f'{diff:+.3f}'}", flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  settings = flags_lib.settings_from_flags(self_stabilization.Settings)
  result = self_stabilization.run(settings, flags_lib.shipped_config("eos"), on_run=show)
  os.makedirs(settings.out, exist_ok=True)
  with open(os.path.join(settings.out, "self_stabilization.json"), "w") as f:
    json.dump(result.to_json(), f)
  print(self_stabilization.table(result))
  path = self_stabilization.figure(result, FLAGS.plot or os.path.join(
      settings.out, "self_stabilization.png"))
  if path:
    print(f"plot: {path}")


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
