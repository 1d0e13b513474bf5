"""Keras callbacks that feed curvature information to the optimizer."""

from __future__ import annotations

import keras

from tf_sharpness.hvp import HessianOperator
from tf_sharpness.lanczos import top_eigenpairs


class NSGDRefresh(keras.callbacks.Callback):
  """Recomputes the top-K Hessian eigenvectors and hands them to ``NSGD``.

  The paper refreshed the directions at the start of every epoch, on ~5% of
  the training data.  Each refresh warm-starts Lanczos from the previous
  directions.

  Args:
    hessian_data: ``(x, y)`` arrays or a finite ``tf.data.Dataset`` on which
      the Hessian is measured.
    loss_fn: mean loss ``loss_fn(y_true, y_pred)``; default the model's
      compiled loss.
    every: ``"epoch"`` (at every epoch start) or N (every N training steps,
      starting with the first).
    num_iters, tol: passed to ``top_eigenpairs``.
    batch_size: chunk size of the Hessian pass.
  """

  def __init__(self, hessian_data, loss_fn=None, every="epoch",
               num_iters: int = 100, tol: float = 1e-3, batch_size: int = 512):
    super().__init__()
    if every != "epoch" and (isinstance(every, bool) or
                             not isinstance(every, int) or every < 1):
      raise ValueError(f"every must be 'epoch' or a positive integer, got {every!r}")
    self.hessian_data = hessian_data
    self.loss_fn = loss_fn
    self.every = every
    self.num_iters = num_iters
    self.tol = tol
    self.batch_size = batch_size
    self.num_refreshes = 0
    self.last_result = None
    self._step = 0
    self._operator = None

  def refresh(self):
    opt = self.model.optimizer
    if not hasattr(opt, "set_directions"):
      raise ValueError("NSGDRefresh needs a model compiled with tf_sharpness.NSGD, "
                       f"got {type(opt).__name__}")
    if not opt.built:
      opt.build(self.model.trainable_variables)
    if self._operator is None:
      loss = self.loss_fn or self.model.loss
      if isinstance(loss, str):
        loss = keras.losses.get(loss)
      self._operator = HessianOperator(self.model, loss, self.hessian_data,
                                       batch_size=self.batch_size)
    start = None
    if self.last_result is not None:
      start = self.last_result.flat_eigenvectors().sum(axis=0)
    self.last_result = top_eigenpairs(self._operator, k=opt.top_k,
                                      num_iters=self.num_iters, tol=self.tol,
                                      start=start)
    opt.set_directions(self.last_result.eigenvectors)
    self.num_refreshes += 1

  def on_epoch_begin(self, epoch, logs=None):
    if self.every == "epoch":
      self.refresh()

  def on_train_batch_begin(self, batch, logs=None):
    if self.every != "epoch" and self._step % self.every == 0:
      self.refresh()
    self._step += 1
