#!/usr/bin/env python3
"""Train a Keras model and track its Hessian spectrum along the trajectory.

The same as `tf-sharpness train`: tf_sharpness/cli/train.py (its flags: --help).
"""

from tf_sharpness.cli import train

if __name__ == "__main__":
  train.run()
