"""Sharpness-aware minimization: SAM (Foret et al. 2021) and ASAM (Kwon et
al. 2021).

For the minibatch loss L_B at w, with T = I (SAM) or T = diag(|w| + eta)
(ASAM, adaptive),

    g = grad L_B(w),   e = rho T^2 g / ||T g||_2,
    w <- base_update(w, grad L_B(w + e)),

i.e. the gradient at the first-order worst point of the ball
{||T^-1 e|| <= rho} replaces the plain gradient in any base optimizer's
update (SGD, momentum, Adam, NSGD).  A step costs two forward-backward
passes.  ``SAM`` runs on each Keras backend (its train step is
TensorFlow's, JAX's stateless one or PyTorch's, as Keras' own).  Under a multi-replica ``tf.distribute`` strategy each replica
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


def perturbation(gradients: Sequence, variables: Sequence, rho: float,
                 adaptive: bool = False, eta: float = 0.01) -> list:
  """e = rho T^2 g / ||T g||_2 (zero where g = 0 everywhere), in
  ``keras.ops`` (any backend)."""
  ops = keras.ops
  values = [ops.convert_to_tensor(v) for v in variables]
  grads = [ops.convert_to_tensor(g) if g is not None else ops.zeros_like(v)
           for g, v in zip(gradients, values)]
  scale = [ops.abs(v) + ops.convert_to_tensor(eta, v.dtype) if adaptive else None
           for v in values]
  tg = [g * s if adaptive else g for g, s in zip(grads, scale)]
  dtype = keras.backend.result_type(*[t.dtype for t in tg])
  norm = ops.sqrt(sum(ops.sum(ops.square(ops.cast(t, dtype))) for t in tg))
  # rho as a tensor of the norm's dtype: a Python float would pass through float32
  factor = ops.divide_no_nan(ops.convert_to_tensor(rho, norm.dtype), norm)
  return [ops.cast(factor, g.dtype) * (t * s if adaptive else t)
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
    if getattr(model, "built", False):
      self.built = True  # its variables are the wrapped model's: usable at once

  def call(self, inputs, training=None):
    return self.inner(inputs, training=training)

  def train_step(self, *args):
    """Keras' train step of the running backend, with the gradient taken at
    w + e (TensorFlow and PyTorch: ``train_step(data)``; JAX:
    ``train_step(state, data)``, stateless)."""
    backend = keras.backend.backend()
    if backend == "jax":
      return self._jax_train_step(*args)
    if backend == "torch":
      return self._torch_train_step(*args)
    return self._tf_train_step(*args)

  def _tf_train_step(self, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = self.trainable_variables
    before = [tf.identity(v.value) for v in self.non_trainable_variables]
    with tf.GradientTape() as tape:
      y_pred = self(x, training=True)
      loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                training=True)
      self._loss_tracker.update_state(
          _unscale(loss), sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
      scaled = self.optimizer.scale_loss(loss)  # e is scale-free; float16 needs it
    grads = tape.gradient(scaled, variables)
    sharp_grads = gradient_at_perturbed(self._loss_at(x, y, sample_weight, before),
                                        [v.value for v in variables], grads,
                                        self.rho, self.adaptive, self.eta)
    self.optimizer.apply_gradients(zip(sharp_grads, variables))
    return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

  def _loss_at(self, x, y, sample_weight, non_trainable):
    """The scaled training loss at other trainable values, statelessly, from
    ``non_trainable``, the values of before the step (as on JAX: BatchNorm
    statistics are updated by the first pass only, and a random layer draws
    with the first pass's seed state)."""
    variables = self.trainable_variables

    def loss_at(params):
      mapping = list(zip(variables, params)) + list(zip(self.non_trainable_variables,
                                                        non_trainable))
      with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
        perturbed = self._compute_loss(x=x, y=y, y_pred=self(x, training=True),
                                       sample_weight=sample_weight, training=True)
      return self.optimizer.scale_loss(perturbed)
    return loss_at

  def _torch_train_step(self, data):
    import torch
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = self.trainable_variables
    before = [v.value.detach().clone() for v in self.non_trainable_variables]
    self.zero_grad()
    y_pred = self(x, training=True)
    loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                              training=True)
    self._loss_tracker.update_state(
        loss, sample_weight=keras.tree.flatten(x)[0].shape[0])
    self.optimizer.scale_loss(loss).backward()
    grads = [v.value.grad for v in variables]
    with torch.no_grad():
      e = perturbation(grads, [v.value for v in variables], self.rho, self.adaptive,
                       self.eta)
    perturbed = [(v.value.detach() + d).requires_grad_(True) for v, d in zip(variables, e)]
    sharp = torch.autograd.grad(self._loss_at(x, y, sample_weight, before)(perturbed),
                                perturbed,
                                allow_unused=True)
    sharp = [torch.zeros_like(p) if g is None else g for g, p in zip(sharp, perturbed)]
    self.zero_grad()
    with torch.no_grad():
      self.optimizer.apply(sharp, variables)
    return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

  def _jax_train_step(self, state, data):
    import jax
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
    (_, aux), grads = grad_fn(trainable, non_trainable, metrics_vars, x, y, sample_weight,
                              training=True, optimizer_variables=optimizer_vars)
    unscaled_loss, y_pred, new_non_trainable, new_metrics_vars = aux
    e = perturbation(grads, trainable, self.rho, self.adaptive, self.eta)
    perturbed = [v + d for v, d in zip(trainable, e)]
    # the second pass from the same non-trainable values; its updates dropped
    _, sharp = grad_fn(perturbed, non_trainable, metrics_vars, x, y, sample_weight,
                       training=True, optimizer_variables=optimizer_vars)
    trainable, optimizer_vars = self.optimizer.stateless_apply(optimizer_vars, sharp,
                                                               trainable)
    logs, new_metrics_vars = self._update_metrics_variables(
        new_metrics_vars, unscaled_loss, x, y, y_pred, sample_weight)
    return logs, (trainable, new_non_trainable, optimizer_vars, new_metrics_vars)

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
