"""Self-stabilization at the edge of stability (Damian et al. 2023): under
full-batch GD, is grad lambda_1 aligned with the loss gradient where the
sharpness is above 2/eta?  (tf_sharpness.experiments.self_stabilization.)

    tf-sharpness self_stabilization --dataset=../shared/data/cifar10-jpeg.tar.gz \\
        --learning_rates=0.02,0.005 --seeds=0,1,2 --out=runs/reproductions/self_stabilization

Runs the shipped eos.cfg at each learning rate and seed.  Rerunning
continues unfinished runs and reuses finished ones.  Prints the table of
cos(grad lambda_1, grad L) above and below 2/eta; writes
OUT/self_stabilization.json (`tf-sharpness report` reads it).
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.experiments import self_stabilization  # noqa: E402

flags_lib.define_settings_flags(self_stabilization.Settings)


def show(run: dict) -> None:
  sides = ", ".join(f"{side} 2/eta: {s['count']} measurements, mean cos "
                    + ("-" if s["mean_cosine"] is None else f"{s['mean_cosine']:+.3f}")
                    for side, s in run["sides"].items())
  print(f"lr {run['learning_rate']:g} seed {run['seed']}: {sides}", flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  settings = flags_lib.settings_from_flags(self_stabilization.Settings)
  result = self_stabilization.run(settings, flags_lib.shipped_config("eos"), on_run=show)
  os.makedirs(settings.out, exist_ok=True)
  with open(os.path.join(settings.out, "self_stabilization.json"), "w") as f:
    json.dump(result.to_json(), f)
  print(self_stabilization.table(result))


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
