#!/usr/bin/env python3
"""Self-stabilization at the edge of stability.  (tf_sharpness.experiments.self_stabilization.)

The same as `tf-sharpness self_stabilization`: tf_sharpness/cli/self_stabilization.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import self_stabilization  # noqa: E402

if __name__ == "__main__":
  self_stabilization.run()
