"""The mean training loss of a Keras model and its gradient over a data set.

For a model f(x; theta) with trainable parameters theta, a loss l and data
D = {(x_n, y_n)}_{n=1..N},

    L(theta) = (1/N) sum_n l(y_n, f(x_n; theta))  [+ R(theta)]

where R is the sum of the model's regularization losses (``model.losses``).
``LossEvaluator`` computes L, grad L and L at other parameter values, batch
by batch: each batch's mean is weighted by its number of examples, so the
batch size never changes the result.  The curvature operators
(``HessianOperator`` and its relatives) build on it and add a product with a
curvature matrix to the same data pass.

The loss may be given in any of the forms Keras users write:

* a batch mean (a Keras loss with its default reduction, or a callable
  returning a scalar mean);
* per-example values (a Keras loss with ``reduction=None``, or a callable
  returning shape [batch] or [batch, ...]): their mean is taken;
* a batch sum (a Keras loss with ``reduction="sum"``): divided by the
  batch size.

A callable returning a *scalar sum* cannot be told from a mean and is taken
as a mean.  Under a multi-replica ``tf.distribute`` strategy, pass a Keras
loss object itself rather than a function that calls one: Keras divides a
mean-reduced loss by the number of replicas inside the call, which is undone
here only for ``keras.losses.Loss`` objects.  The model is called with ``stateless_call``: with
``training=True`` BatchNorm uses batch statistics but its moving statistics
are never updated, and with ``training=False`` (the default) BatchNorm uses
the moving statistics and dropout is off.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_sharpness.curvature import vectors
from tf_sharpness.curvature.compiled_loss import CompiledLoss
from tf_sharpness.curvature.exact_moments import exact_moments
from tf_sharpness.errors import NonFiniteError

UNROLL = 8  # batches evaluated per graph call

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


class LossEvaluator:
  """L(theta) and grad L(theta) over ``data`` for ``model.trainable_variables``.

  Args:
    model: a built Keras 3 model.
    loss_fn: ``loss_fn(y_true, y_pred)``: a batch mean, per-example values or
      a Keras loss with reduction "sum" (see the module doc); or
      ``CompiledLoss(model)``, the model's whole compiled training loss (loss
      dicts and lists with ``loss_weights``, or a ``compute_loss`` override).
    data: an ``(x, y)`` pair of arrays/tensors (x and y may be dicts or lists
      for multi-input/-output models), evaluated in chunks of ``batch_size``;
      a finite ``tf.data.Dataset`` of ``(x, y)`` batches; or a finite
      generator (any iterable that is not a tuple or list) of ``(x, y)``
      batches, read once.  Sample weights are refused: the Hessian is of the
      unweighted mean loss.
    training: the ``training`` argument of the model call.
    include_regularization: add ``model.losses`` to the loss.
    batch_size: chunk size for array data (ignored for a Dataset).
    strategy: a ``tf.distribute.Strategy``; defaults to the current one.
      Under a multi-replica strategy each replica evaluates its share of a
      batch and the example-weighted sums are all-reduced.
  """

  def __new__(cls, *args, **kwargs):
    """On the JAX or PyTorch backend of Keras, the operator of
    ``backend_operator`` (same arguments, same methods) instead."""
    if keras.backend.backend() != "tensorflow":
      from tf_sharpness.curvature.backend_operator import on_backend
      return on_backend(cls, *args, **kwargs)
    return super().__new__(cls)

  def __init__(self,
               model,
               loss_fn: LossFn,
               data,
               *,
               training: bool = False,
               include_regularization: bool = True,
               batch_size: int = 512,
               strategy: tf.distribute.Strategy | None = None):
    check_arguments(model, loss_fn, batch_size, include_regularization, training)
    self.strategy = strategy or tf.distribute.get_strategy()
    if isinstance(loss_fn, CompiledLoss) and self.strategy.num_replicas_in_sync > 1:
      raise ValueError(f"loss: {loss_fn.name} (the model's compiled loss) is not "
                       "supported under a multi-replica strategy; pass one callable loss")
    self.model = model
    self.loss_fn = loss_fn
    self.training = bool(training)
    self.include_regularization = bool(include_regularization)
    self.variables = list(model.trainable_variables)
    self.shapes = [tuple(int(d) for d in v.shape) for v in self.variables]
    self.dtype = tf.as_dtype(self.variables[0].dtype)
    self.dim = int(sum(np.prod(s) for s in self.shapes))
    self.batch_size = int(batch_size)
    self.set_data(data)
    self._grad_pass = self._data_pass(self._batch_gradient)
    self._loss_pass = None
    self._gradient_at_pass = None

  # ------------------------------------------------------------------ public

  def set_data(self, data) -> None:
    """Replaces the data (e.g. a redrawn subset of the same size, which
    reuses the traced functions)."""
    batches = [_check_batch(b) for b in _as_dataset(data, self.batch_size)]
    if isinstance(self.loss_fn, CompiledLoss) and batches:
      self.loss_fn.build(*batches[0])
    self.num_examples = sum(
        int(tf.shape(tf.nest.flatten(x)[0])[0]) for x, _ in batches)
    if self.num_examples == 0:
      raise ValueError("data holds no examples")
    if self.strategy.num_replicas_in_sync > 1:
      batches = [self._split_over_replicas(b) for b in batches]
    # Groups of at most UNROLL batches, each evaluated by one graph call.
    self._groups = [tuple(batches[i:i + UNROLL])
                    for i in range(0, len(batches), UNROLL)]

  def loss(self) -> float:
    """The mean loss L(theta) over the data (plus regularization)."""
    return float(self.loss_and_gradient()[0])

  def gradient(self) -> list[tf.Tensor]:
    """The gradient of L at the current parameters."""
    return self.loss_and_gradient()[1]

  def loss_and_gradient(self):
    loss, grad, _, finite = self._run(self._grad_pass, [])
    if not bool(finite):
      _raise_non_finite(loss, grad, [])
    return loss, grad

  def loss_at(self, params: Sequence, *, allow_nonfinite: bool = False) -> float:
    """L at the parameter values ``params`` (a variable-shaped list), without
    assigning them to the model: the variables are never written.

    A non-finite L raises ``NonFiniteError`` unless ``allow_nonfinite`` (far
    from theta, e.g. on a landscape grid, the loss may overflow).
    """
    params = self._check_vector(params)
    if self._loss_pass is None:
      self._loss_pass = self._data_pass(self._batch_loss_at)
    loss, _, _, finite = self._run(self._loss_pass, params)
    if not bool(finite) and not allow_nonfinite:
      _raise_non_finite(loss, [], [])
    return float(loss)

  def loss_and_gradient_at(self, params: Sequence):
    """(L, grad L) at the parameter values ``params``, without assigning
    them (as ``loss_at``); a non-finite loss raises ``NonFiniteError``."""
    params = self._check_vector(params)
    if self._gradient_at_pass is None:
      self._gradient_at_pass = self._data_pass(self._batch_gradient_at)
    loss, grad, _, finite = self._run(self._gradient_at_pass, params)
    if not bool(finite):
      _raise_non_finite(loss, grad, [])
    return loss, grad

  def parameters(self) -> np.ndarray:
    """The current parameters theta as a flat float64 vector."""
    return vectors.to_numpy([v.numpy() for v in self.variables])

  def hessian_definition(self) -> dict:
    """What this object's loss is: the facts a reader of a measurement needs."""
    out = {"examples": self.num_examples,
           "batchnorm_mode": "batch statistics" if self.training else "moving statistics",
           "dropout": "on" if self.training else "off",
           "regularization": self.include_regularization,
           "loss_reduction": "mean over examples",
           "parameters": self.dim}
    if isinstance(self.loss_fn, CompiledLoss):
      out["objective"] = self.loss_fn.name
    policy = getattr(self.model, "dtype_policy", None)
    compute = getattr(policy, "compute_dtype", None)
    if compute is not None and compute != self.dtype.name:
      out["compute_dtype"] = (f"{compute} ({policy.name}); parameters, loss and "
                              f"products in {self.dtype.name}")
    return out

  # ---------------------------------------------------------------- internals

  def _check_vector(self, v):
    if len(v) != len(self.shapes):
      raise ValueError(
          f"vector has {len(v)} parts, the model has {len(self.shapes)} "
          "trainable variables")
    out = []
    for i, (t, s) in enumerate(zip(v, self.shapes)):
      t = tf.convert_to_tensor(t, dtype=self.dtype)
      if tuple(t.shape) != s:
        raise ValueError(f"vector part {i} has shape {tuple(t.shape)}, "
                         f"variable has shape {s}")
      out.append(t)
    return out

  def _outputs(self, params, x):
    """Model outputs and regularization losses at parameter values ``params``
    (stateless: no variable, BatchNorm statistics included, is written)."""
    non_trainable = [v.value for v in self.model.non_trainable_variables]
    y_pred, _, losses = self.model.stateless_call(
        params, non_trainable, x, training=self.training, return_losses=True)
    return y_pred, losses

  def _objective(self, params, x, y):
    if isinstance(self.loss_fn, CompiledLoss):
      non_trainable = [v.value for v in self.model.non_trainable_variables]
      return tf.cast(self.loss_fn.total(params, non_trainable, x, y, self.training),
                     self.dtype)
    y_pred, losses = self._outputs(params, x)
    loss = tf.cast(replica_mean_loss(self.loss_fn, y, y_pred), self.dtype)
    if self.include_regularization and losses:
      loss += tf.cast(tf.add_n(losses), self.dtype)
    return loss

  def _read_params(self):
    return [tf.convert_to_tensor(v.value) for v in self.variables]

  def _batch_gradient(self, x, y, v):
    del v
    return self._batch_gradient_at(x, y, self._read_params())

  def _batch_gradient_at(self, x, y, params):
    params = list(params)
    with tf.GradientTape() as tape:
      tape.watch(params)
      loss = self._objective(params, x, y)
    grad = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, dense(grad), []

  def _batch_loss_at(self, x, y, params):
    return self._objective(list(params), x, y), [], []

  def _split_over_replicas(self, batch):
    """A global batch as per-replica shards (np.array_split order)."""
    def shard(ctx):
      return tf.nest.map_structure(
          lambda t: np.array_split(np.asarray(t), ctx.num_replicas_in_sync)[
              ctx.replica_id_in_sync_group], batch)
    return self.strategy.experimental_distribute_values_from_function(shard)

  def _data_pass(self, batch_fn, keep_gradient: bool = True):
    """A tf.function summing n_b * (loss, grad, product) over a group of
    batches, where ``batch_fn(x, y, v) -> (loss, grad, product)``.

    The batches are unrolled in the graph (a tf.data loop inside the graph
    runs the HVP inside a while loop, measured ~2x slower on CPU).  It is
    traced under ``exact_moments``: normalization layers get their exact
    second derivative (see that module).
    """
    strategy = self.strategy
    multi = strategy.num_replicas_in_sync > 1

    def replica_fn(x, y, v):
      n = tf.shape(tf.nest.flatten(x)[0])[0]
      nf = tf.cast(n, self.dtype)
      loss, grad, out = batch_fn(x, y, v)
      if not keep_gradient:
        grad = []
      if multi:  # an empty shard (possible on a small batch) contributes 0
        loss = tf.reduce_sum(loss)  # Keras gives shape [0] on an empty shard
        weigh = lambda t: tf.where(n > 0, nf * t, tf.zeros_like(t))
      else:
        weigh = lambda t: nf * t
      return nf, weigh(loss), [weigh(g) for g in grad], [weigh(h) for h in out]

    def data_pass(batches, v):
      sums = None
      with exact_moments():  # traced with second derivatives that are right
        for x, y in batches:
          out = strategy.run(replica_fn, args=(x, y, v))
          # tensor by tensor: a multi-worker strategy cannot reduce a nested
          # structure of tensors of different shapes in one call
          out = tf.nest.map_structure(
              lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), out)
          sums = out if sums is None else tf.nest.map_structure(tf.add, sums, out)
      return sums

    return tf.function(data_pass, autograph=False)

  def _run(self, data_pass, v):
    sums = None
    for group in self._groups:
      out = data_pass(group, v)
      sums = out if sums is None else tf.nest.map_structure(tf.add, sums, out)
    return _normalize(*sums)


@tf.function(autograph=False)
def _normalize(n, loss, grad, out):
  scale = tf.cast(1.0, n.dtype) / n
  loss = loss * scale
  grad = [g * scale for g in grad]
  out = [h * scale for h in out]
  finite = tf.reduce_all(
      [tf.reduce_all(tf.math.is_finite(t)) for t in [loss, *grad, *out]])
  return loss, grad, out, finite


def _raise_non_finite(loss, grad, out, what="Hessian-vector product"):
  if not bool(tf.math.is_finite(loss)):
    raise NonFiniteError("loss", f"{float(loss)}; the loss may have diverged or "
                         "the inputs hold NaN")
  if not all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grad):
    raise NonFiniteError("gradient", "NaN or inf found")
  raise NonFiniteError(what, "NaN or inf found; the loss may have diverged or "
                       "the inputs hold NaN")


def dense(tensors) -> list[tf.Tensor]:
  """Gradients as dense tensors: an ``Embedding`` (any gather) has sparse
  ``IndexedSlices`` gradients, which forward-mode JVPs cannot take and
  which must not be mistaken for zeros."""
  return [tf.convert_to_tensor(t) for t in tensors]


def check_arguments(model, loss_fn, batch_size, include_regularization: bool,
                    training: bool) -> None:
  """The checks every engine's evaluator makes on its arguments (one-line
  errors naming the argument)."""
  if not isinstance(batch_size, (int, np.integer)) or isinstance(
      batch_size, bool) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  if not getattr(model, "built", False) or not model.trainable_variables:
    raise ValueError("model must be a built Keras model with trainable "
                     "variables (call it once or model.build(input_shape))")
  if not callable(loss_fn):
    raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
  if isinstance(loss_fn, CompiledLoss) and not include_regularization:
    raise ValueError("include_regularization=False: the model's compiled loss "
                     f"({loss_fn.name}) includes model.losses; pass one callable loss")
  if training:
    _refuse_random_layers(model)


def _refuse_random_layers(model):
  """With training=True a layer that draws noise (Dropout and its kin,
  random augmentation: anything holding a seed generator) is a new function
  at every call: the loss has no Hessian."""
  for layer in model._flatten_layers(include_self=False):
    random = getattr(layer, "seed_generator", None) is not None or isinstance(
        layer, (keras.layers.Dropout, keras.layers.GaussianNoise,
                keras.layers.GaussianDropout, keras.layers.AlphaDropout))
    if random and getattr(layer, "rate", None) != 0:
      raise ValueError(f"training=True: layer {layer.name!r} ({type(layer).__name__}) "
                       "is random in training mode, so the loss has no Hessian; "
                       "measure with training=False (its inference behaviour)")


def _check_batch(batch):
  if not isinstance(batch, (tuple, list)) or len(batch) != 2:
    size = len(batch) if isinstance(batch, (tuple, list)) else type(batch).__name__
    raise ValueError(f"data: each batch must be an (x, y) pair, got {size}"
                     + (" items: sample weights are not supported (the Hessian is of "
                        "the unweighted mean loss); drop them" if size == 3 else ""))
  return tuple(batch)


def replica_mean_loss(loss_fn: LossFn, y_true, y_pred) -> tf.Tensor:
  """The mean loss of this replica's examples, whatever form ``loss_fn`` has.

  Per-example values (rank >= 1) are averaged; a Keras loss with reduction
  "sum" is divided by the batch size.  Keras 3 losses with a mean reduction
  divide by the number of replicas when called inside a multi-replica
  ``tf.distribute`` strategy (so that summing gradients across replicas
  gives the global mean); this undoes that, as Keras' own trainer does, so
  that every replica sees its own mean.
  """
  loss = loss_fn(y_true, y_pred)
  loss = tf.convert_to_tensor(loss)
  n = tf.shape(tf.nest.flatten(y_pred)[0])[0]
  if loss.shape.rank is None:
    raise ValueError("loss_fn returned a value of unknown rank; return a "
                     "scalar batch mean or per-example values")
  if loss.shape.rank > 0:
    batch = tf.nest.flatten(y_pred)[0].shape[0]
    if None not in (loss.shape[0], batch) and loss.shape[0] != batch:
      raise ValueError(f"loss_fn returned shape {loss.shape} for a batch of "
                       f"{batch} examples; return a scalar batch mean or one "
                       "value per example")
    return tf.reduce_mean(loss)
  reduction = getattr(loss_fn, "reduction", None) if isinstance(
      loss_fn, keras.losses.Loss) else None
  if reduction == "sum":
    return loss / tf.cast(n, loss.dtype)
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  if replicas > 1 and reduction in _MEAN_REDUCTIONS:
    loss = loss * tf.cast(replicas, loss.dtype)
  return loss


def _as_dataset(data, batch_size: int) -> tf.data.Dataset:
  if isinstance(data, tf.data.Dataset):
    if data.cardinality() == tf.data.INFINITE_CARDINALITY:
      raise ValueError("data: an infinite tf.data.Dataset has no mean loss; "
                       "pass a finite dataset (e.g. use .take(n))")
    return data
  if isinstance(data, (tuple, list)) and len(data) == 3:
    raise ValueError("data: (x, y, sample_weight) is not supported: the Hessian is "
                     "of the unweighted mean loss; pass (x, y)")
  if not isinstance(data, (tuple, list)):
    if hasattr(data, "__iter__") or hasattr(data, "__next__"):
      return list(iter(data))  # a generator or iterable of (x, y) batches
    raise ValueError("data must be an (x, y) pair, a finite tf.data.Dataset or an "
                     f"iterable of (x, y) batches, got {type(data).__name__}")
  if len(data) != 2:
    raise ValueError("data must be an (x, y) pair or a finite tf.data.Dataset"
                     f" of (x, y) batches, got a sequence of {len(data)}")
  # tf.data takes a list for one tensor: lists of inputs or labels (of
  # different shapes or dtypes) are structures here, as in model.fit.
  x, y = keras.tree.lists_to_tuples(tuple(data))
  try:
    n_x = len(tf.nest.flatten(x)[0])
    n_y = len(tf.nest.flatten(y)[0])
  except TypeError:
    raise ValueError("data: x and y must be arrays or tensors with a batch "
                     "dimension") from None
  if n_x != n_y:
    raise ValueError(f"data: x has {n_x} examples but y has {n_y}")
  if n_x == 0:
    raise ValueError("data holds no examples (x and y are empty)")
  # Slice whole batches (one copy per batch, not per example).
  num_full = n_x // batch_size
  cut = num_full * batch_size
  reshape = lambda a, lo, hi, nb: tf.nest.map_structure(
      lambda t: np.reshape(np.asarray(t)[lo:hi], (nb, -1) + np.shape(t)[1:]), a)
  parts = []
  if num_full:
    parts.append(tf.data.Dataset.from_tensor_slices(
        (reshape(x, 0, cut, num_full), reshape(y, 0, cut, num_full))))
  if cut < n_x:
    rest = tf.nest.map_structure(lambda t: np.asarray(t)[cut:], (x, y))
    parts.append(tf.data.Dataset.from_tensors(rest))
  ds = parts[0]
  for p in parts[1:]:
    ds = ds.concatenate(p)
  return ds
