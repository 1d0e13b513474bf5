#!/usr/bin/env python3
"""Is the SGD step too large along the sharpest direction?  (Jastrzebski et
al. 2019; tf_sharpness.experiments.step_length.)

The same as `tf-sharpness step_length`: tf_sharpness/cli/step_length.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import step_length  # noqa: E402

if __name__ == "__main__":
  step_length.run()
