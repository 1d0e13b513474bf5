#!/usr/bin/env python3
"""Sharpness along the SGD trajectory vs learning rate and batch size

The same as `tf-sharpness sweep`: tf_sharpness/cli/sweep.py (its flags: --help).
"""

from tf_sharpness.cli import sweep

if __name__ == "__main__":
  sweep.run()
