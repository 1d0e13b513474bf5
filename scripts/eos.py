#!/usr/bin/env python3
"""Edge of stability (Cohen et al. 2021): full-batch GD, sharpness vs 2/eta.

The same as `tf-sharpness eos`: tf_sharpness/cli/eos.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import eos  # noqa: E402

if __name__ == "__main__":
  eos.run()
