#!/usr/bin/env python3
"""A walk with SGD (Xing et al. 2018): how often does an SGD step cross a
valley floor?

The same as `tf-sharpness walk`: tf_sharpness/cli/walk.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import walk  # noqa: E402

if __name__ == "__main__":
  walk.run()
