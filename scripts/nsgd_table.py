#!/usr/bin/env python3
"""NSGD steers sharpness (Jastrzebski et al. 2019, Table 1), at equal

The same as `tf-sharpness nsgd`: tf_sharpness/cli/nsgd.py (its flags: --help).
"""

from tf_sharpness.cli import nsgd

if __name__ == "__main__":
  nsgd.run()
