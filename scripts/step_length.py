#!/usr/bin/env python3
"""Is the SGD step too large along the sharpest direction?  (Jastrzebski et

The same as `tf-sharpness step_length`: tf_sharpness/cli/step_length.py (its flags: --help).
"""

from tf_sharpness.cli import step_length

if __name__ == "__main__":
  step_length.run()
