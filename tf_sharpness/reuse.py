"""When an experiment driver reuses, continues or refuses a run folder
(``train_or_reuse``): the policy that lets a stopped driver be started
again without losing or mixing runs."""

from __future__ import annotations

import dataclasses
import logging

import tensorflow as tf

from tf_sharpness import rundir
from tf_sharpness.config import MUTABLE_ON_RESUME, Config
from tf_sharpness import training
from tf_sharpness.rundir import read_metrics

log = logging.getLogger("tf_sharpness")


def train_or_reuse(cfg: Config) -> list[dict]:
  """Runs ``cfg`` to completion for experiment drivers that are started again
  after a stop, and returns the run's records.

  * a run whose checkpoint was made with other settings is refused;
  * a finished run (last record ``final`` at ``cfg.steps`` or at a training
    loss at or below ``cfg.target_train_loss``, or diverged) is reused;
  * a run trained past ``cfg.steps`` gives its records up to ``cfg.steps``:
    training up to a step does not depend on how many follow (schedules
    count steps, not fractions of ``cfg.steps``), and the end-of-run
    measurements are there where the schedules reach ``cfg.steps``.  With
    ``cfg.target_train_loss`` it is refused: that run would have stopped
    at the target;
  * an unfinished run continues from its last checkpoint; a folder with a
    run but no checkpoint starts over.

  Divergence is logged, not raised: the last record then carries
  ``diverged``.
  """
  records = read_metrics(cfg.logdir)
  last = records[-1] if records else {}
  has_checkpoint = tf.train.latest_checkpoint(f"{cfg.logdir}/{rundir.CHECKPOINTS}")
  if has_checkpoint:  # never reuse or continue a run made with other settings
    diff = rundir.config_differences(rundir.saved_config(has_checkpoint), cfg.to_json(),
                                     MUTABLE_ON_RESUME, Config.checkpoint_defaults())
    if diff:
      raise rundir.RunDirError(
          f"{cfg.logdir} holds a run made with other settings: "
          f"{rundir.describe_differences(diff)}; use another folder or delete it")
  if last.get("step", -1) > cfg.steps:  # a longer run: its first cfg.steps are this one
    if cfg.target_train_loss:
      raise rundir.RunDirError(
          f"{cfg.logdir} holds a run trained past step {cfg.steps} (to {last['step']}); "
          "its start cannot stand for a run that stops at `target_train_loss`: "
          "use another folder")
    log.info("reusing the first %d steps of the longer run in %s", cfg.steps, cfg.logdir)
    return [r for r in records if r["step"] <= cfg.steps]
  reached = (last.get("target_reached") and cfg.target_train_loss and
             last.get("train_loss", float("inf")) <= cfg.target_train_loss)
  if (last.get("final") and (last.get("step") == cfg.steps or reached)
      ) or last.get("diverged"):
    log.info("reusing the finished run in %s", cfg.logdir)
    return records
  cfg = dataclasses.replace(cfg, resume=bool(has_checkpoint),
                            overwrite=not has_checkpoint)
  try:
    training.train(cfg)
  except training.Diverged as e:
    log.warning("run in %s diverged: %s", cfg.logdir, e)
  return read_metrics(cfg.logdir)
