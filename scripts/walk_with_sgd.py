#!/usr/bin/env python3
"""A walk with SGD (Xing et al. 2018): how often does an SGD step cross a

The same as `tf-sharpness walk`: tf_sharpness/cli/walk.py (its flags: --help).
"""

from tf_sharpness.cli import walk

if __name__ == "__main__":
  walk.run()
