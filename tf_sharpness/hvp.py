"""The Hessian of a Keras model's mean training loss as a linear operator.

For a model f(x; theta) with trainable parameters theta, a loss l and data
D = {(x_n, y_n)}_{n=1..N},

    L(theta) = (1/N) sum_n l(y_n, f(x_n; theta))  [+ R(theta)]

where R is the sum of the model's regularization losses (``model.losses``).
``HessianOperator`` stands for H = d^2 L / d theta^2 and applies it to a
vector (a Hessian-vector product, HVP) without ever forming H:

* ``forward_over_reverse``: the gradient g(theta) is taken by reverse mode
  (``tf.GradientTape``) inside a forward-mode accumulator
  (``tf.autodiff.ForwardAccumulator``) seeded with the tangent v, so that
  H v = d/dt g(theta + t v) at t = 0 comes out as the JVP of the gradient.
* ``reverse_over_reverse``: H v = d/d theta <g(theta), v> with nested tapes.

Data are evaluated batch by batch; each batch's mean loss, gradient and HVP
are weighted by its number of examples, so the batch size never changes the
operator.  The model is called with ``stateless_call``: with
``training=True`` BatchNorm uses batch statistics but its moving statistics
are never updated, and with ``training=False`` (the default) BatchNorm uses
the moving statistics and dropout is off.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_sharpness.errors import NonFiniteError

METHODS = ("forward_over_reverse", "reverse_over_reverse")
UNROLL = 8  # batches evaluated per graph call

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


class HessianOperator:
  """Hessian of the mean loss over ``data`` w.r.t. ``model.trainable_variables``.

  Args:
    model: a built Keras 3 model.
    loss_fn: ``loss_fn(y_true, y_pred)`` returning the mean loss of a batch
      (any Keras loss with the default reduction, or a callable).
    data: an ``(x, y)`` pair of arrays/tensors, evaluated in chunks of
      ``batch_size``, or a finite ``tf.data.Dataset`` of ``(x, y)`` batches.
    method: ``"forward_over_reverse"`` or ``"reverse_over_reverse"``.
    training: the ``training`` argument of the model call (see module doc).
    include_regularization: add ``model.losses`` to the loss.
    batch_size: chunk size for array data (ignored for a Dataset).
    strategy: a ``tf.distribute.Strategy``; defaults to the current one.
      Under a multi-replica strategy each replica evaluates its share of a
      batch and the example-weighted sums are all-reduced.
  """

  def __init__(self,
               model,
               loss_fn: LossFn,
               data,
               *,
               method: str = "forward_over_reverse",
               training: bool = False,
               include_regularization: bool = True,
               batch_size: int = 512,
               strategy: tf.distribute.Strategy | None = None):
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not model.built or not model.trainable_variables:
      raise ValueError("model must be built and have trainable variables")
    self.model = model
    self.loss_fn = loss_fn
    self.method = method
    self.training = bool(training)
    self.include_regularization = bool(include_regularization)
    self.strategy = strategy or tf.distribute.get_strategy()
    self.variables = list(model.trainable_variables)
    self.shapes = [tuple(int(d) for d in v.shape) for v in self.variables]
    self.dtype = tf.as_dtype(self.variables[0].dtype)
    self.dim = int(sum(np.prod(s) for s in self.shapes))
    self.batch_size = int(batch_size)
    self.set_data(data)
    self.num_matvecs = 0
    self._hvp_pass = self._data_pass(self._batch_hvp, keep_gradient=False)
    self._grad_pass = self._data_pass(self._batch_gradient)
    self._full_pass = None
    self._loss_pass = None

  # ------------------------------------------------------------------ public

  def set_data(self, data) -> None:
    """Replaces the data (e.g. a redrawn Hessian subset of the same size,
    which reuses the traced functions)."""
    batches = list(_as_dataset(data, self.batch_size))
    self.num_examples = sum(
        int(tf.shape(tf.nest.flatten(x)[0])[0]) for x, _ in batches)
    if self.num_examples == 0:
      raise ValueError("data holds no examples")
    if self.strategy.num_replicas_in_sync > 1:
      batches = [self._split_over_replicas(b) for b in batches]
    # Groups of at most UNROLL batches, each evaluated by one graph call.
    self._groups = [tuple(batches[i:i + UNROLL])
                    for i in range(0, len(batches), UNROLL)]

  def matvec(self, v: Sequence) -> list[tf.Tensor]:
    """Returns H v for a list of tensors shaped like the variables."""
    v = self._check_vector(v)
    loss, _, hv, finite = self._run(self._hvp_pass, v)
    self.num_matvecs += 1
    if not bool(finite):
      _raise_non_finite(loss, [], hv)
    return hv

  def loss_gradient_and_matvec(self, v: Sequence):
    """Returns (L, grad L, H v) from one pass over the data.

    (A separate graph: returning the gradient from the HVP graph keeps
    parts of the backward pass alive that ``matvec`` prunes, ~20% slower.)
    """
    v = self._check_vector(v)
    if self._full_pass is None:
      self._full_pass = self._data_pass(self._batch_hvp, keep_gradient=True)
    loss, grad, hv, finite = self._run(self._full_pass, v)
    self.num_matvecs += 1
    if not bool(finite):
      _raise_non_finite(loss, grad, hv)
    return loss, grad, hv

  def loss_at(self, params: Sequence) -> float:
    """L at the parameter values ``params`` (a variable-shaped list), without
    assigning them to the model: the variables are never written."""
    params = self._check_vector(params)
    if self._loss_pass is None:
      self._loss_pass = self._data_pass(self._batch_loss_at)
    loss, _, _, finite = self._run(self._loss_pass, params)
    if not bool(finite):
      _raise_non_finite(loss, [], [])
    return float(loss)

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

  # ---------------------------------------------------------------- internals

  def _check_vector(self, v):
    if len(v) != len(self.shapes):
      raise ValueError(
          f"vector has {len(v)} parts, the operator has {len(self.shapes)} "
          "variables")
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
    y_pred, losses = self._outputs(params, x)
    loss = tf.cast(replica_mean_loss(self.loss_fn, y, y_pred), self.dtype)
    if self.include_regularization and losses:
      loss += tf.cast(tf.add_n(losses), self.dtype)
    return loss

  def _read_params(self):
    return [tf.convert_to_tensor(v.value) for v in self.variables]

  def _batch_gradient(self, x, y, v):
    del v
    params = self._read_params()
    with tf.GradientTape() as tape:
      tape.watch(params)
      loss = self._objective(params, x, y)
    grad = tape.gradient(loss, params,
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, grad, []

  def _batch_loss_at(self, x, y, params):
    return self._objective(list(params), x, y), [], []

  def _batch_hvp(self, x, y, v):
    params = self._read_params()
    if self.method == "forward_over_reverse":
      with tf.autodiff.ForwardAccumulator(params, v) as acc:
        with tf.GradientTape() as tape:
          tape.watch(params)
          loss = self._objective(params, x, y)
        grad = tape.gradient(
            loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
      hv = acc.jvp(grad, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    else:
      with tf.GradientTape() as outer:
        outer.watch(params)
        with tf.GradientTape() as inner:
          inner.watch(params)
          loss = self._objective(params, x, y)
        grad = inner.gradient(
            loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        gv = tf.add_n([tf.reduce_sum(g * t) for g, t in zip(grad, v)])
      hv = outer.gradient(gv, params,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, grad, hv

  def _split_over_replicas(self, batch):
    """A global batch as per-replica shards (np.array_split order)."""
    def shard(ctx):
      return tf.nest.map_structure(
          lambda t: np.array_split(np.asarray(t), ctx.num_replicas_in_sync)[
              ctx.replica_id_in_sync_group], batch)
    return self.strategy.experimental_distribute_values_from_function(shard)

  def _data_pass(self, batch_fn, keep_gradient: bool = True):
    """A tf.function summing n_b * (loss, grad, hv) over a group of batches.

    The batches are unrolled in the graph (a tf.data loop inside the graph
    runs the HVP inside a while loop, measured ~2x slower on CPU).
    """
    strategy = self.strategy
    multi = strategy.num_replicas_in_sync > 1

    def replica_fn(x, y, v):
      n = tf.shape(tf.nest.flatten(x)[0])[0]
      nf = tf.cast(n, self.dtype)
      loss, grad, hv = batch_fn(x, y, v)
      if not keep_gradient:
        grad = []
      if multi:  # an empty shard (possible on a small batch) contributes 0
        loss = tf.reduce_sum(loss)  # Keras gives shape [0] on an empty shard
        weigh = lambda t: tf.where(n > 0, nf * t, tf.zeros_like(t))
      else:
        weigh = lambda t: nf * t
      return nf, weigh(loss), [weigh(g) for g in grad], [weigh(h) for h in hv]

    def data_pass(batches, v):
      sums = None
      for x, y in batches:
        out = strategy.run(replica_fn, args=(x, y, v))
        out = strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
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
def _normalize(n, loss, grad, hv):
  scale = tf.cast(1.0, n.dtype) / n
  loss = loss * scale
  grad = [g * scale for g in grad]
  hv = [h * scale for h in hv]
  finite = tf.reduce_all(
      [tf.reduce_all(tf.math.is_finite(t)) for t in [loss, *grad, *hv]])
  return loss, grad, hv, finite


def _raise_non_finite(loss, grad, hv):
  if not bool(tf.math.is_finite(loss)):
    raise NonFiniteError("loss", f"{float(loss)}; the loss may have diverged or "
                         "the inputs hold NaN")
  if not all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grad):
    raise NonFiniteError("gradient", "NaN or inf found")
  raise NonFiniteError("Hessian-vector product", "NaN or inf found; the loss "
                       "may have diverged or the inputs hold NaN")


_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


def replica_mean_loss(loss_fn: LossFn, y_true, y_pred) -> tf.Tensor:
  """The mean loss of this replica's examples.

  Keras 3 losses with a mean reduction divide by the number of replicas when
  called inside a multi-replica ``tf.distribute`` strategy (so that summing
  gradients across replicas gives the global mean); this undoes that, as
  Keras' own trainer does, so that every replica sees its own mean.
  """
  loss = loss_fn(y_true, y_pred)
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  if (replicas > 1 and isinstance(loss_fn, keras.losses.Loss) and
      getattr(loss_fn, "reduction", None) in _MEAN_REDUCTIONS):
    loss = loss * tf.cast(replicas, loss.dtype)
  return loss


def _as_dataset(data, batch_size: int) -> tf.data.Dataset:
  if isinstance(data, tf.data.Dataset):
    if data.cardinality() == tf.data.INFINITE_CARDINALITY:
      raise ValueError("data: an infinite tf.data.Dataset has no mean loss; "
                       "pass a finite dataset (e.g. use .take(n))")
    return data
  if not isinstance(data, (tuple, list)) or len(data) != 2:
    raise ValueError("data must be an (x, y) pair or a finite tf.data.Dataset"
                     f" of (x, y) batches, got {type(data).__name__}")
  x, y = data
  n_x = len(tf.nest.flatten(x)[0])
  if n_x != len(y):
    raise ValueError(f"data: x has {n_x} examples but y has {len(y)}")
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


