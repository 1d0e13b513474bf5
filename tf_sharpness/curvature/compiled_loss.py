"""The loss a compiled Keras model trains on, as a curvature objective.

``model.fit`` minimizes what ``model.compute_loss`` returns.  By default
that is

    L(theta) = sum_o w_o * mean_n l_o(y_{n,o}, f_o(x_n; theta)) + sum(model.losses)

over the outputs o of a (multi-output) model compiled with
``loss={name: loss}`` or ``loss=[...]`` and ``loss_weights`` w_o; the last
term holds the weight regularizers and the ``add_loss`` terms of this very
call.  A subclass may override ``compute_loss`` with anything else.
``CompiledLoss(model)`` evaluates exactly that function at given parameter
values, statelessly (no variable, metric or BatchNorm statistic is written),
so the curvature operators take the Hessian of the loss Keras trains on.

``resolve_loss(model, loss)`` picks the objective for a measurement: the
``loss`` a user passes, else the compiled loss if it is one callable, else
``CompiledLoss(model)``.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class CompiledLoss:
  """Keras' total training loss of ``model`` (``model.compute_loss``).

  Regularization and ``add_loss`` terms are part of it (Keras adds them),
  so an evaluator must not add ``model.losses`` again.
  """

  def __init__(self, model):
    if getattr(model, "_compile_loss", None) is None and not overrides_compute_loss(model):
      raise ValueError("the model is not compiled with a loss; call model.compile(loss=...)"
                       " or pass loss=")
    self.model = model
    self.name = describe(model)

  def build(self, x, y) -> None:
    """Builds Keras' loss container eagerly (its first call creates
    metrics, which must not happen inside a traced HVP), the way
    ``model.fit`` builds it: symbolically, from the model's outputs, so a
    loss dict keyed by output names meets list outputs and dict labels as
    in ``fit``."""
    compile_loss = getattr(self.model, "_compile_loss", None)
    if compile_loss is None or compile_loss.built:
      return
    try:
      compile_loss.build(y, self.model(x, training=False))
    except KeyError:  # a loss dict keyed by output names, list outputs, dict labels
      self.model._symbolic_build(data_batch=(x, y))

  def total(self, params, non_trainable, x, y, training: bool) -> tf.Tensor:
    """L at ``params`` (the trainable variables' values, in order)."""
    model = self.model
    mapping = list(zip(model.trainable_variables, params))
    mapping += list(zip(model.non_trainable_variables, non_trainable))
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
      y_pred = model(x, training=training)
      return model._compute_loss(x, y, y_pred, sample_weight=None, training=training)

  def __call__(self, y_true, y_pred):
    raise TypeError("CompiledLoss is the model's whole training loss; it is "
                    "evaluated by the curvature operators, not called on outputs")


def overrides_compute_loss(model) -> bool:
  return type(model).compute_loss is not keras.Model.compute_loss


def _loss_weights(model):
  return getattr(getattr(model, "_compile_loss", None), "_user_loss_weights", None)


def _is_single(loss) -> bool:
  return callable(loss) or isinstance(loss, str)


def describe(model) -> str:
  if overrides_compute_loss(model):
    return f"{type(model).__name__}.compute_loss"
  loss, weights = model.loss, _loss_weights(model)
  name = lambda l: l if isinstance(l, str) else getattr(l, "name", None) or getattr(
      l, "__name__", type(l).__name__)
  parts = keras.tree.map_structure(name, loss) if not _is_single(loss) else name(loss)
  text = f"compiled loss {parts}"
  if weights is not None:
    text += f" with loss_weights {weights}"
  return text + " + model.losses"


def resolve_loss(model, loss=None, *, who: str = "SpectrumCallback"):
  """The objective to measure: ``loss`` if given (a callable or a Keras
  loss name), else the model's compiled loss."""
  if loss is not None:
    if isinstance(loss, str):
      loss = keras.losses.get(loss)
    if not callable(loss):
      raise ValueError(f"{who}: loss= must be a callable loss(y_true, y_pred) or a "
                       f"Keras loss name, got {type(loss).__name__}")
    return loss
  compiled = getattr(model, "loss", None)
  if overrides_compute_loss(model):
    return CompiledLoss(model)
  if compiled is None:
    raise ValueError(f"{who} needs loss=... or a compiled model")
  if _is_single(compiled) and _loss_weights(model) is None:
    return keras.losses.get(compiled) if isinstance(compiled, str) else compiled
  return CompiledLoss(model)
