#!/usr/bin/env python3
"""The runs of an ``edge_of_stability.py`` --json, step by step.

The same as `tf-sharpness eos_report`: tf_sharpness/cli/eos_report.py (its flags: --help).
"""

from tf_sharpness.cli import eos_report

if __name__ == "__main__":
  eos_report.run()
