"""Every Keras 3 layer, activation and loss family of ``layer_audit``: our
Hessian-vector products against the dense Hessian from central differences
of exact gradients (float64), and TensorFlow's own nested-tape rules beside
them, which are wrong exactly through ``tf.nn.moments``."""

import pytest

from layer_audit import CASES, audit

# Families whose second derivative TensorFlow's own rules get wrong (the
# stop_gradient in tf.nn.moments); ours must be right on them too.
TENSORFLOW_WRONG = {"LayerNormalization", "GroupNormalization",
                    "BatchNormalization (batch statistics)"}


@pytest.mark.parametrize("name", list(CASES))
def test_family_is_differentiated_exactly_twice(name):
  row = audit(name)
  print(f"{name}: ours {row['ours']:.1e}, nested tapes {row['tensorflow']:.1e}, "
        f"{row['method']}, self-check {row['fd_check']}")
  assert row["ours"] < 1e-6
  assert row["fd_check"] == "agrees"
  if name in TENSORFLOW_WRONG:
    assert row["tensorflow"] > 1e-3  # the reference sees what nested tapes miss
  else:
    assert row["tensorflow"] < 1e-6
