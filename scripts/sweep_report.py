#!/usr/bin/env python3
"""Seed by seed: the runs of a sweep that ``tf-sharpness sweep`` wrote
with --json, one row per run.

The same as `tf-sharpness sweep_report`: tf_sharpness/cli/sweep_report.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import sweep_report  # noqa: E402

if __name__ == "__main__":
  sweep_report.run()
