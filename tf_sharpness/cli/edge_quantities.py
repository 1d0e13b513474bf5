"""Which curvature sits at 2/eta under SGD: lambda_max, batch sharpness,
the curvature along the update or the critical sharpness?
(tf_sharpness.experiments.edge_quantities.)

    tf-sharpness edge_quantities --dataset=../shared/data/cifar10-jpeg.tar.gz \\
        --learning_rates=0.01,0.05 --seeds=0,1,2 --out=runs/reproductions/edge_quantities

Rerunning continues unfinished runs and reuses finished ones.  Prints, per
learning rate and quantity, the late median over 2/eta over seeds; writes
OUT/edge_quantities.json (`tf-sharpness report` reads it).
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness.experiments import edge_quantities  # noqa: E402

flags_lib.define_settings_flags(edge_quantities.Settings)
FLAGS = flags.FLAGS


def show(run: dict) -> None:
  late = {q: v["late_ratio"] for q, v in run["late"].items() if v["late_ratio"] is not None}
  print(f"lr {run['learning_rate']:g} seed {run['seed']}: late median / (2/eta) " +
        ", ".join(f"{q} {v:.3f}" for q, v in late.items()), flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  settings = flags_lib.settings_from_flags(edge_quantities.Settings)
  result = edge_quantities.run(settings, on_run=show)
  os.makedirs(settings.out, exist_ok=True)
  with open(os.path.join(settings.out, "edge_quantities.json"), "w") as f:
    json.dump(result.to_json(), f)
  print(edge_quantities.table(result))


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
