#!/usr/bin/env python3
"""Which curvature sits at 2/eta under SGD?  (tf_sharpness.experiments.edge_quantities.)

The same as `tf-sharpness edge_quantities`: tf_sharpness/cli/edge_quantities.py (its flags: --help).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tf_sharpness.cli import edge_quantities  # noqa: E402

if __name__ == "__main__":
  edge_quantities.run()
