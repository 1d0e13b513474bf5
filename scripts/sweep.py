#!/usr/bin/env python3
"""Sharpness along the SGD trajectory vs learning rate and batch size
(Jastrzebski et al. 2019, Fig. 1), with seeds.

The same as `tf-sharpness sweep`: tf_sharpness/cli/sweep.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import sweep  # noqa: E402

if __name__ == "__main__":
  sweep.run()
