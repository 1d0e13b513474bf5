#!/usr/bin/env python3
"""Early-training phase diagram (Kalra & Barkeshli 2023).

The same as `tf-sharpness phase`: tf_sharpness/cli/phase.py (its flags: --help).
"""

from tf_sharpness.cli import phase

if __name__ == "__main__":
  phase.run()
