#!/usr/bin/env python3
"""Measure saved runs again at their last checkpoint.  (tf_sharpness.saved_run.)

The same as `tf-sharpness measure`: tf_sharpness/cli/measure.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import measure  # noqa: E402

if __name__ == "__main__":
  measure.run()
