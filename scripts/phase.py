#!/usr/bin/env python3
"""Early-training phase diagram (Kalra & Barkeshli 2023).

The same as `tf-sharpness phase`: tf_sharpness/cli/phase.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import phase  # noqa: E402

if __name__ == "__main__":
  phase.run()
