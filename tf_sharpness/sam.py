"""Sharpness-aware minimization: SAM (Foret et al. 2021) and ASAM (Kwon et
al. 2021).

For the minibatch loss L_B at w, with T = I (SAM) or T = diag(|w| + eta)
(ASAM, adaptive),

    g = grad L_B(w),   e = rho T^2 g / ||T g||_2,
    w <- base_update(w, grad L_B(w + e)),

i.e. the gradient at the first-order worst point of the ball
{||T^-1 e|| <= rho} replaces the plain gradient in any base optimizer's
update (SGD, momentum, Adam, NSGD).  A step costs two forward-backward
passes.  Under a multi-replica ``tf.distribute`` strategy each replica
perturbs with its own shard's gradient, as the paper's implementation does
(m-sharpness with m the per-replica batch).

``perturbation`` is the rule; ``SAM(model, rho)`` puts it into ``model.fit``
(a ``keras.Model`` wrapping yours, compiled with your base optimizer);
``train_step.TrainStep(sam_rho=...)`` into our loop.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf


def perturbation(gradients: Sequence[tf.Tensor], variables: Sequence, rho: float,
                 adaptive: bool = False, eta: float = 0.01) -> list[tf.Tensor]:
  """e = rho T^2 g / ||T g||_2 (zero where g = 0 everywhere)."""
  values = [tf.convert_to_tensor(v) for v in variables]
  grads = [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v)
           for g, v in zip(gradients, values)]
  scale = [tf.abs(v) + tf.constant(eta, v.dtype) if adaptive else None for v in values]
  tg = [g * s if adaptive else g for g, s in zip(grads, scale)]
  norm = tf.linalg.global_norm(tg)
  factor = tf.math.divide_no_nan(tf.constant(rho, norm.dtype), norm)  # not tf.cast: a
  # Python float would pass through float32
  return [tf.cast(factor, g.dtype) * (t * s if adaptive else t)
          for g, t, s in zip(grads, tg, scale)]


def gradient_at_perturbed(loss_at, values: Sequence[tf.Tensor], gradients, rho: float,
                          adaptive: bool = False, eta: float = 0.01) -> list[tf.Tensor]:
  """grad L_B(w + e), with ``loss_at(params) -> L_B`` evaluated statelessly
  at the perturbed values (no variable is written: under a multi-replica
  strategy every replica keeps its own e)."""
  e = perturbation(gradients, values, rho, adaptive, eta)
  perturbed = [v + d for v, d in zip(values, e)]
  with tf.GradientTape() as tape:
    tape.watch(perturbed)
    loss = loss_at(perturbed)
  return tape.gradient(loss, perturbed, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def check_rho(rho: float, name: str = "rho") -> float:
  if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho < float("inf"):
    raise ValueError(f"{name} must be a positive number, got {rho!r}")
  return float(rho)


@keras.saving.register_keras_serializable(package="tf_sharpness")
class SAM(keras.Model):
  """``model`` trained by SAM/ASAM in ``model.fit``: compile this wrapper with
  the base optimizer and your loss; it predicts, evaluates and saves as the
  wrapped model does.

  Args:
    model: a Keras model.
    rho: the radius of the ball (Foret et al.: 0.05; ASAM: ~0.5-2).
    adaptive: ASAM's elementwise scaling T = |w| + eta.
    eta: ASAM's offset.

  The second forward pass (at w + e) runs in training mode but statelessly:
  BatchNorm moving statistics are updated by the first pass only.
  """

  def __init__(self, model, rho: float = 0.05, adaptive: bool = False,
               eta: float = 0.01, **kwargs):
    super().__init__(**kwargs)
    self.inner = model
    self.rho = check_rho(rho)
    self.adaptive = bool(adaptive)
    self.eta = float(eta)

  def call(self, inputs, training=None):
    return self.inner(inputs, training=training)

  def train_step(self, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = self.trainable_variables
    with tf.GradientTape() as tape:
      y_pred = self(x, training=True)
      loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                training=True)
      self._loss_tracker.update_state(
          _unscale(loss), sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
      scaled = self.optimizer.scale_loss(loss)  # e is scale-free; float16 needs it
    grads = tape.gradient(scaled, variables)
    non_trainable = [v.value for v in self.non_trainable_variables]

    def loss_at(params):
      mapping = list(zip(variables, params)) + list(zip(self.non_trainable_variables,
                                                        non_trainable))
      with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
        perturbed = self._compute_loss(x=x, y=y, y_pred=self(x, training=True),
                                       sample_weight=sample_weight, training=True)
      return self.optimizer.scale_loss(perturbed)
    sharp_grads = gradient_at_perturbed(loss_at, [v.value for v in variables], grads,
                                        self.rho, self.adaptive, self.eta)
    self.optimizer.apply_gradients(zip(sharp_grads, variables))
    return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

  def get_config(self):
    return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.inner),
            "rho": self.rho, "adaptive": self.adaptive, "eta": self.eta}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    model = keras.saving.deserialize_keras_object(config.pop("model"),
                                                  custom_objects=custom_objects)
    return cls(model, **config)


def _unscale(loss):
  """The loss Keras reports (a mean-reduced loss is divided by the number
  of replicas inside a multi-replica strategy)."""
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  return loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss
