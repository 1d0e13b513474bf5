#!/usr/bin/env python3
"""One run's sharpness trajectory: a table, its summary and a plot.

The same as `tf-sharpness report`: tf_sharpness/cli/report.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import report  # noqa: E402

if __name__ == "__main__":
  report.run()
