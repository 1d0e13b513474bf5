"""The sharpness measures of ``tf_sharpness.sharpness`` along training."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from tf_sharpness import sharpness as S
from tf_sharpness import summary
from tf_sharpness.probes.base import Context, Probe, Schedule


class SharpnessProbe(Probe):
  """Named sharpness measures (``sharpness.MEASURES``: worst_l2, worst_linf,
  adaptive_l2, adaptive_linf, avg, adaptive_avg, keskar, trace_h2) on the
  Hessian data, with the settings of ``sharpness.Settings`` (rho, sigma,
  epsilon, steps, samples).  Worst-case values are lower bounds (an ascent);
  Monte-Carlo ones carry standard errors."""

  def __init__(self, schedule: Schedule, measures: Sequence[str] = ("worst_l2", "avg",
                                                                    "adaptive_l2"),
               **settings):
    super().__init__(schedule, name="sharpness")
    unknown = [m for m in measures if m not in S.MEASURES]
    if unknown or not measures:
      raise ValueError(f"measures must be a non-empty list of {sorted(S.MEASURES)}, "
                       f"got {list(measures)}")
    self.measures = tuple(measures)
    self.settings = S.Settings(**settings)

  def run(self, ctx: Context) -> None:
    op = ctx.hessian_operator()
    settings = dataclasses.replace(self.settings, seed=self.settings.seed + ctx.seed + ctx.step)
    values, errors, cost = {}, {}, {}
    for name in self.measures:
      res = S.measure(name, op, settings)
      values[name] = res.value
      if res.stderr is not None:
        errors[name] = res.stderr
      cost[name] = {"gradients": res.num_gradients, "losses": res.num_losses,
                    "matvecs": res.num_matvecs}
      ctx.record.scalar(f"sharpness/{name}", res.value,
                        show=name if name == self.measures[0] else None)
    fixed = {k: v for k, v in dataclasses.asdict(self.settings).items() if k != "seed"}
    ctx.record.set(sharpness=values, sharpness_stderr=errors, sharpness_cost=cost,
                   sharpness_settings=fixed)
    summary.sharpness("sharpness", values, ctx.step, stderr=errors, settings=fixed)
