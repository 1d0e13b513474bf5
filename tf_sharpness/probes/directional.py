"""Curvature along the optimizer's own direction, along training
(``tf_sharpness.directional``): cheap enough for every step."""

from __future__ import annotations

import numpy as np

from tf_sharpness import directional as D
from tf_sharpness import stability, summary
from tf_sharpness.curvature import vectors
from tf_sharpness.probes.base import Context, Probe, Schedule


class DirectionalProbe(Probe):
  """On the Hessian data, at a due step t:

  * ``gradient``: c(g) = g^T H g / ||g||^2 at theta_t (one HVP), g the
    gradient of the Hessian-data loss;
  * ``update``: c(d) with d = theta_{t+1} - theta_t, the update the optimizer
    took, at theta_{t+1} (one HVP after the step: the curvature one step on,
    as the update's own Hessian would cost writing theta_t back);
  * ``critical_update``: the critical sharpness 2 / eta_c along the update
    continued from theta_{t+1} (direction -d / eta per unit learning rate,
    so that eta_c is in the learning rate's units; forward passes only);

  beside the SGD threshold 2 / eta.  Records ``directional`` and TensorBoard
  scalars ``directional/*``.
  """

  def __init__(self, schedule: Schedule, critical: bool = True):
    super().__init__(schedule, name="directional")
    self.critical = bool(critical)
    self._before = None

  def run(self, ctx: Context) -> None:
    op = ctx.hessian_operator()
    self._before = op.parameters()
    _, grad = op.loss_and_gradient()
    g = vectors.to_numpy(grad)
    values = {"gradient": D.directional_curvature(direction=g, evaluator=op).value
              if g.any() else None}
    self._values = values

  def after_step(self, ctx: Context, outputs) -> None:
    if self._before is None:
      return
    op = ctx.hessian_operator()
    d = op.parameters() - self._before
    self._before = None
    values = dict(self._values)
    lr = float(ctx.learning_rate)
    if d.any():
      values["update"] = D.directional_curvature(direction=d, evaluator=op).value
      if self.critical and lr > 0:
        crit = D.critical_sharpness(direction=-d / lr, evaluator=op, initial_step=lr,
                                    rtol=1e-2)
        values["critical_update"] = crit.lambda_c
        values["critical_losses"] = crit.num_losses
    values["threshold_2_over_eta"] = 2.0 / lr if lr > 0 else None
    curvatures = {}
    for key in ("gradient", "update", "critical_update"):
      if values.get(key) is not None and np.isfinite(values[key]):
        ctx.record.scalar(f"directional/{key}", values[key])
        curvatures[key] = values[key]
    ctx.record.set(directional=values)
    if curvatures:  # the Spectrum tab's section, with the optimizer's thresholds
      summary.directional("directional/curvature", curvatures, ctx.step,
                          thresholds=stability.thresholds(ctx.optimizer, ctx.learning_rate))
