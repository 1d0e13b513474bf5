"""What a trajectory report reads, and the summary JSON it writes: a run
directory's metrics.jsonl (up to an epoch), that JSON read back, and the
earlier run a rerun is compared with.  Errors are ``ConfigError`` naming
the setting (`logdir`, `until_epoch`, `from_json`, `compare`)."""

from __future__ import annotations

import dataclasses
import os

from tf_sharpness import rundir
from tf_sharpness.errors import ConfigError
from tf_sharpness.reports import trajectory
from tf_sharpness.reports import trajectory_tables as T


@dataclasses.dataclass
class Source:
  """The measurements a trajectory report tabulates and summarizes."""
  records: list[dict]
  per_epoch: float | None  # steps per epoch, None for a run without epochs
  thresholds: dict[str, float]  # the optimizer's stability thresholds by name
  wall_times: dict  # step -> wall time from the event files ({} from a JSON)
  logdir: str | None

  def summary(self, loss_threshold: float) -> dict:
    return {"logdir": self.logdir,
            **trajectory.summarize(self.records, self.per_epoch, loss_threshold)}


def from_run(logdir: str, until_epoch: float | None = None) -> Source:
  """The run directory ``logdir`` (its records up to ``until_epoch``)."""
  path = os.path.join(logdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise ConfigError(f"`logdir={logdir}`: no metrics.jsonl there (is it a run directory?)")
  try:
    records = rundir.read_metrics(path)
  except rundir.RunDirError as e:
    raise ConfigError(f"`logdir={logdir}`: {e}") from None
  if not any(r.get("top_eigenvalues") for r in records):
    raise ConfigError(f"`logdir={logdir}`: no lambda_max was measured in this run "
                      "(train with `spectrum_every` > 0)")
  per_epoch = T.steps_per_epoch(records)
  if until_epoch is not None:
    if per_epoch is None:
      raise ConfigError(f"`until_epoch={until_epoch:g}`: this run records no epochs")
    records = [r for r in records if r["step"] <= until_epoch * per_epoch]
    if not any(r.get("top_eigenvalues") for r in records):
      raise ConfigError(f"`until_epoch={until_epoch:g}`: no lambda_max was measured by then")
  return Source(records, per_epoch, T.thresholds(records), rundir.event_wall_times(logdir),
                logdir)


def from_summary_json(data, path: str) -> Source:
  """A summary JSON (``summary_json``) read back as records: everything but
  the wall times (no events), the test accuracy of the last measurement
  only, and its last stability thresholds on every row."""
  missing = {"steps", "lambda_max", "epochs", "train_loss", "stability_thresholds"} - (
      data.keys() if isinstance(data, dict) else set())
  if missing:
    raise ConfigError(f"`from_json={path}`: not a summary JSON of a trajectory report "
                      f"(no {', '.join(sorted(missing))})")
  limits = data["stability_thresholds"]
  matvecs = data.get("matvecs") or [None] * len(data["steps"])
  records = [{"step": step, "top_eigenvalues": [top], "train_loss": loss,
              "spectrum_matvecs": hvps, "stability_thresholds": limits}
             for step, top, loss, hvps in zip(data["steps"], data["lambda_max"],
                                              data["train_loss"], matvecs)]
  records[-1].update(test_accuracy=data.get("test_accuracy"), diverged=data.get("diverged"))
  per_epoch = T.steps_per_epoch([{"step": s, "epoch": e}
                                 for s, e in zip(data["steps"], data["epochs"] or [])])
  return Source(records, per_epoch, limits, {}, data.get("logdir"))


def compared(data, path: str, name: str) -> dict:
  """The earlier run to compare with: a summary JSON, or in a sweep's
  results (``experiments.sweep.results_of``) the run called ``name``
  (RUN_seedS)."""
  if isinstance(data, list):
    runs = {f"{s.get('run')}_seed{r.get('seed')}": r for s in data if isinstance(s, dict)
            for r in s.get("runs", [])}
    if name not in runs:
      raise ConfigError(f"`compare={path}`: no run {name!r} in this sweep (it has "
                        f"{', '.join(sorted(runs)) or 'none'})")
    data = runs[name]
  if not isinstance(data, dict) or not {"steps", "lambda_max"} <= data.keys():
    raise ConfigError(f"`compare={path}`: not a summary JSON of a trajectory report "
                      "(needs 'steps' and 'lambda_max')")
  return data


def summary_json(summary: dict, loss_threshold: float, thresholds: dict[str, float],
                 windows: list) -> dict:
  """The report's summary as JSON (``from_summary_json`` reads it back)."""
  fields = {k: v for k, v in summary.items() if k != "logdir"}
  return {"logdir": summary.get("logdir"), "loss_threshold": loss_threshold,
          "stability_thresholds": thresholds, **fields, "windows": windows}
