#!/usr/bin/env python3
"""Train a Keras model and track its Hessian spectrum along the trajectory.

The same as `tf-sharpness train`: tf_sharpness/cli/train.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import train  # noqa: E402

if __name__ == "__main__":
  train.run()
