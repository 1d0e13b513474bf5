"""Loss and accuracy of the model on named data sets."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_sharpness.probes.base import Context, Probe, Schedule


class EvaluationProbe(Probe):
  """Mean loss and accuracy on each of ``sets`` ({"train": (x, y), "test":
  ...}) in inference mode, in chunks of ``chunk`` examples; recorded as
  ``<name>_loss`` / ``<name>_accuracy`` and TensorBoard ``eval/...``."""

  def __init__(self, schedule: Schedule, model, per_example_loss, sets: dict,
               chunk: int = 1000):
    super().__init__(schedule, name="evaluation")
    self.sets = {name: xy for name, xy in sets.items() if len(xy[1])}
    self.chunk = int(chunk)
    self._model = model
    self._per_example = per_example_loss
    self._batch = tf.function(self._batch_sums, reduce_retracing=True)

  def _batch_sums(self, x, y):
    logits = self._model(x, training=False)
    correct = tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)),
        tf.float32))
    return tf.reduce_sum(self._per_example(y, logits)), correct

  def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    total, correct = 0.0, 0.0
    for i in range(0, len(y), self.chunk):
      loss, right = self._batch(x[i:i + self.chunk], y[i:i + self.chunk])
      total += float(loss)
      correct += float(right)
    return total / len(y), correct / len(y)

  def run(self, ctx: Context) -> None:
    for name, (x, y) in self.sets.items():
      loss, accuracy = self.evaluate(x, y)
      ctx.record.scalar(f"eval/{name}_loss", loss, key=f"{name}_loss")
      ctx.record.scalar(f"eval/{name}_accuracy", accuracy, key=f"{name}_accuracy",
                        show=f"{name}_accuracy")
