#!/usr/bin/env python3
"""Train a Keras model and track its Hessian spectrum along the trajectory.

    python scripts/train.py --flagfile=scripts/flags/quick.cfg
    python scripts/train.py --flagfile=scripts/flags/quick.cfg --steps=50

Exit codes: 0 done, 1 bad flags or data, 2 the run diverged (NaN/inf loss or
eigenvalue; everything logged so far is kept in --logdir).
"""

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_sharpness import flags as flags_lib  # noqa: E402
from tf_sharpness import training  # noqa: E402
from tf_sharpness.data import DatasetError  # noqa: E402

flags_lib.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                      datefmt="%H:%M:%S")
  logging.getLogger("tf_sharpness").setLevel(logging.INFO)
  try:
    cfg = flags_lib.config_from_flags()
    os.makedirs(cfg.logdir, exist_ok=True)
    with open(os.path.join(cfg.logdir, "flags.txt"), "w") as f:
      f.write(flags_lib.flagfile_text(cfg))
    training.train(cfg)
  except (ValueError, DatasetError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except training.Diverged as e:
    print(f"diverged: {e}; logs so far are in {flags.FLAGS.logdir}",
          file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
