"""Training losses, as per-example functions of integer labels and logits.

* ``xent``: softmax cross-entropy.
* ``mse``: 0.5 * ||f(x) - onehot(y)||^2 summed over outputs (the convention
  of Cohen et al. 2021, under which the GD stability threshold reads 2/eta).

``mean_loss(name)`` gives the batch-mean version that ``HessianOperator``
expects.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tf_sharpness.errors import ConfigError

LOSSES = ("xent", "mse")


def per_example_loss(name: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  if name == "xent":
    def xent(y, logits):
      return tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=tf.cast(y, tf.int32), logits=logits)
    return xent
  if name == "mse":
    def mse(y, logits):
      target = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1],
                          dtype=logits.dtype)
      return 0.5 * tf.reduce_sum(tf.square(logits - target), axis=-1)
    return mse
  raise ConfigError(f"`loss` must be one of {LOSSES}, got {name!r}")


def mean_loss(name: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  per_example = per_example_loss(name)
  return lambda y, logits: tf.reduce_mean(per_example(y, logits))
