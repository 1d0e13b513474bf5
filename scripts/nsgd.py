#!/usr/bin/env python3
"""NSGD steers sharpness (Jastrzebski et al. 2019, Table 1), at equal
training loss and with seeds.

The same as `tf-sharpness nsgd`: tf_sharpness/cli/nsgd.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import nsgd  # noqa: E402

if __name__ == "__main__":
  nsgd.run()
