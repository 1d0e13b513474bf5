#!/usr/bin/env python3
"""The runs of an ``eos.py`` --json, step by step.

The same as `tf-sharpness eos_report`: tf_sharpness/cli/eos_report.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import eos_report  # noqa: E402

if __name__ == "__main__":
  eos_report.run()
