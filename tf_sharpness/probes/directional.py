"""Curvature along the optimizer's own direction, along training
(``tf_sharpness.directional``): cheap enough for every step."""

from __future__ import annotations

import numpy as np

from tf_sharpness import directional as D
from tf_sharpness import stability, summary
from tf_sharpness.curvature import vectors
from tf_sharpness.probes.base import Context, Probe, Schedule


QUANTITIES, DEFAULT_QUANTITIES = D.QUANTITIES, D.QUANTITIES[:3]


class DirectionalProbe(Probe):
  """On the Hessian data, at a due step t, the ``quantities`` asked for:

  * ``gradient``: c(g) = g^T H g / ||g||^2 at theta_t (one HVP), g the
    gradient of the Hessian-data loss;
  * ``update``: c(d) with d = theta_{t+1} - theta_t, the update the optimizer
    took, at theta_{t+1} (one HVP after the step: the curvature one step on,
    as the update's own Hessian would cost writing theta_t back);
  * ``critical_update``: the critical sharpness 2 / eta_c (Kalra et al.)
    of the step the optimizer took: eta_c the smallest step from theta_t
    along the update that raises the loss (direction -d / eta per unit
    learning rate, so that eta_c is in the learning rate's units; the
    losses are taken at theta_t + s d without writing the weights back;
    forward passes and one gradient).  lambda_c > 2/eta: the step itself
    raised the loss.  (Before 2026-12-07 it was measured from theta_{t+1},
    along the update continued: at the edge of stability, where the step
    overshoots along the sharpest direction, that is uphill at once.);
  * ``batch``: batch sharpness, the mean over the step's landscape
    minibatches (training batches seeded by the step) of
    g_B^T H_B g_B / ||g_B||^2, with its standard error (a gradient and an
    HVP per minibatch; needs the landscape data);
  * ``self_stabilization``: grad lambda_1 = grad (u^T H u) at the top
    eigenvector u (Damian et al. 2023), its norm and its cosine with the
    loss gradient (the gradient of one HVP; uses the step's eigenpairs);

  beside the SGD threshold 2 / eta.  Records ``directional`` and TensorBoard
  scalars ``directional/*``.
  """

  def __init__(self, schedule: Schedule, quantities=DEFAULT_QUANTITIES,
               critical: bool | None = None):
    super().__init__(schedule, name="directional")
    if isinstance(quantities, bool):  # the older DirectionalProbe(schedule, critical)
      quantities, critical = DEFAULT_QUANTITIES, quantities
    quantities = tuple(quantities)
    if critical is False:  # the older switch
      quantities = tuple(q for q in quantities if q != "critical_update")
    unknown = [q for q in quantities if q not in QUANTITIES]
    if unknown or not quantities:
      raise ValueError(f"quantities must be some of {list(QUANTITIES)}, got {list(quantities)}")
    if "self_stabilization" in quantities:
      import keras  # pylint: disable=g-import-not-at-top
      if keras.backend.backend() != "tensorflow":
        raise ValueError("quantities: self_stabilization (the gradient of the sharpness) "
                         "needs KERAS_BACKEND=tensorflow, not "
                         f"{keras.backend.backend()!r}")
    self.quantities = quantities
    self.critical = "critical_update" in quantities
    self._before = self._learning_rate = None

  @property
  def eigenpairs_needed(self) -> int:
    return 1 if "self_stabilization" in self.quantities else 0

  @property
  def needs_landscape(self) -> bool:
    return "batch" in self.quantities

  def run(self, ctx: Context) -> None:
    op = ctx.hessian_operator()
    self._before = op.parameters()
    self._learning_rate = float(ctx.learning_rate)  # the step's (a schedule moves after it)
    values = {}
    if "gradient" in self.quantities:
      _, grad = op.loss_and_gradient()
      g = vectors.to_numpy(grad)
      values["gradient"] = (D.directional_curvature(direction=g, evaluator=op).value
                            if g.any() else None)
    if "batch" in self.quantities:
      res = D.batch_sharpness(batches=ctx.landscape.minibatches(ctx.step), evaluator=op)
      values["batch"], values["batch_stderr"] = res.value, res.stderr
    if "self_stabilization" in self.quantities:
      u = ctx.eigenpairs().result.eigenvectors[0]
      res = D.sharpness_gradient(u=u, evaluator=op)
      values["self_stabilization"] = {"norm": res.norm,
                                      "cosine_with_loss_gradient":
                                          res.cosine_with_loss_gradient,
                                      "inner_with_loss_gradient":
                                          res.inner_with_loss_gradient,
                                      "cosine_without_u": res.cosine_without_u,
                                      "u_dot_loss_gradient": res.u_dot_loss_gradient,
                                      "loss_gradient_norm": res.loss_gradient_norm,
                                      "lambda_1": res.value}
      ctx.record.scalar("directional/sharpness_gradient_cosine",
                        res.cosine_with_loss_gradient)
    self._values = values

  def after_step(self, ctx: Context, outputs) -> None:
    if self._before is None:
      return
    op = ctx.hessian_operator()
    before, self._before = self._before, None  # theta_t
    d = op.parameters() - before
    values = dict(self._values)
    lr = self._learning_rate
    if d.any() and "update" in self.quantities:
      values["update"] = D.directional_curvature(direction=d, evaluator=op).value
    if d.any():
      if self.critical and lr > 0:
        crit = D.critical_sharpness(direction=-d / lr, evaluator=op, initial_step=lr,
                                    rtol=1e-2, origin=before)
        values["critical_update"] = crit.lambda_c
        values["critical_losses"] = crit.num_losses
    values["threshold_2_over_eta"] = 2.0 / lr if lr > 0 else None
    curvatures = {}
    for key in ("gradient", "update", "critical_update", "batch"):
      if values.get(key) is not None and np.isfinite(values[key]):
        ctx.record.scalar(f"directional/{key}", values[key])
        curvatures[key] = values[key]
    ctx.record.set(directional=values)
    if curvatures:  # the Spectrum tab's section, with the optimizer's thresholds
      summary.directional("directional/curvature", curvatures, ctx.step,
                          thresholds=stability.thresholds(ctx.optimizer, ctx.learning_rate))
