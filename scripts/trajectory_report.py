#!/usr/bin/env python3
"""One run's sharpness trajectory: a table, its summary and a plot.

The same as `tf-sharpness report`: tf_sharpness/cli/report.py (its flags: --help).
"""

from tf_sharpness.cli import report

if __name__ == "__main__":
  report.run()
