"""Train a Keras model and track its Hessian spectrum along the trajectory.

    python scripts/train.py --flagfile=scripts/flags/quick.cfg
    python scripts/train.py --flagfile=scripts/flags/quick.cfg --steps=600 --resume

Exit codes: 0 done, 1 a setting, the data or the run folder is not usable
(one line naming the flag), 2 the run diverged (NaN/inf loss or eigenvalue;
everything logged so far is kept in --logdir), 130 interrupted (Ctrl-C; what
was measured is flushed, --resume continues from the last checkpoint).
Any other error is a bug and shows its traceback.
"""

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from tf_sharpness.cli import flags as flags_lib  # noqa: E402
from tf_sharpness import rundir  # noqa: E402
from tf_sharpness import training  # noqa: E402
from tf_sharpness.data import DatasetError  # noqa: E402
from tf_sharpness.errors import ConfigError  # noqa: E402

flags_lib.define_flags()

USER_ERRORS = (ConfigError, DatasetError, rundir.RunDirError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                      datefmt="%H:%M:%S")
  logging.getLogger("tf_sharpness").setLevel(logging.INFO)
  logdir = None
  try:
    cfg = flags_lib.config_from_flags()
    logdir = cfg.logdir
    training.train(cfg)
  except USER_ERRORS as e:
    print(f"error: {flags_lib.as_flags(str(e))}", file=sys.stderr)
    return 1
  except training.Diverged as e:
    print(f"diverged: {e}; logs so far are in {logdir}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    last = rundir.latest_checkpoint_step(logdir)
    print(f"interrupted; what was measured is in {logdir}; " +
          (f"--resume continues from the checkpoint at step {last}" if last is not None
           else "no checkpoint was written (use --checkpoint_every to resume)"),
          file=sys.stderr)
    return 130
  return 0


def run() -> None:
  flags_lib.run(main, __name__)


if __name__ == "__main__":
  run()
