#!/usr/bin/env python3
"""Seed by seed: the runs of a sweep that ``sharpness_vs_lr_batch.py`` wrote

The same as `tf-sharpness sweep_report`: tf_sharpness/cli/sweep_report.py (its flags: --help).
"""

from tf_sharpness.cli import sweep_report

if __name__ == "__main__":
  sweep_report.run()
