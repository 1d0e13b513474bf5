"""A run directory, and the rules that keep it from losing or mixing data.

A run writes into its folder: TensorBoard event files, ``metrics.jsonl`` (one
JSON object per logged step), ``flags.txt`` and ``checkpoints/``.  Starting
over, continuing and refusing are explicit (``open_run``):

* a folder that already holds a run is never written into by a new run:
  ``resume=True`` continues it from its latest checkpoint, ``overwrite=True``
  deletes the run's files first (only those: other files stay);
* a checkpoint knows the configuration that made it; resuming with other
  values of the fields that shape the run is refused, naming them;
* resuming at step S drops every record at or after S from metrics.jsonl and
  from the event files (a killed run wrote beyond its last checkpoint), so
  each step appears once; a half-written last line or event record, left by
  a kill, is dropped with a warning.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile

import tensorflow as tf

log = logging.getLogger("tf_sharpness")

METRICS = "metrics.jsonl"
FLAGS = "flags.txt"
CHECKPOINTS = "checkpoints"
EVENTS = "events.out.tfevents.*"


class RunDirError(ValueError):
  """A run directory cannot be used as asked (one line for the user)."""


class RunDirectory:
  """The files of one run in ``path`` (created if missing)."""

  def __init__(self, path: str, flag: str = "`logdir`"):
    if not isinstance(path, str) or not path.strip():
      raise RunDirError(f"{flag} must be a folder path, got {path!r}")
    self.path = path
    self.flag = flag
    if os.path.exists(path) and not os.path.isdir(path):
      raise RunDirError(f"{flag}={path} is a file, not a folder")
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      raise RunDirError(f"{flag}={path} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
      raise RunDirError(f"{flag}={path} is not writable")

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def checkpoint_dir(self) -> str:
    return self.file(CHECKPOINTS)

  def event_files(self) -> list[str]:
    return sorted(glob.glob(self.file(EVENTS)))

  def run_files(self) -> list[str]:
    """The files (and checkpoints/) of a run in this folder."""
    names = [self.file(n) for n in (METRICS, FLAGS, CHECKPOINTS)]
    return [p for p in names if os.path.exists(p)] + self.event_files()

  def has_run(self) -> bool:
    return bool(self.run_files())

  def remove_run(self) -> None:
    for p in self.run_files():
      if os.path.isdir(p):
        shutil.rmtree(p)
      else:
        os.remove(p)

  def write_flags(self, text: str) -> None:
    with open(self.file(FLAGS), "w") as f:
      f.write(text)

  def truncate(self, step: int) -> int:
    """Drops records at steps >= ``step`` from metrics.jsonl and the event
    files; returns how many were dropped."""
    dropped = _truncate_metrics(self.file(METRICS), step)
    for path in self.event_files():
      dropped += _truncate_events(path, step)
    return dropped

  def metrics_log(self) -> "MetricsLog":
    return MetricsLog(self.file(METRICS))


def worker_directory() -> str:
  """A temporary folder for a non-chief multi-worker replica's files."""
  return tempfile.mkdtemp(prefix="tf_sharpness_worker_")


class MetricsLog:
  """metrics.jsonl, appended to one line per record and flushed at once."""

  def __init__(self, path: str):
    self.path = path
    self.file = open(path, "a")

  def write(self, record: dict) -> None:
    self.file.write(json.dumps(record, allow_nan=True) + "\n")
    self.file.flush()

  def close(self) -> None:
    self.file.close()


def read_metrics(path: str) -> list[dict]:
  """The records of a metrics.jsonl file (or of a run folder's) in order.

  A half-written last line (a killed run) is skipped; a corrupt line
  elsewhere raises ``RunDirError``.
  """
  if os.path.isdir(path):
    path = os.path.join(path, METRICS)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [l for l in f.read().split("\n") if l.strip()]
  out = []
  for i, line in enumerate(lines):
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        log.warning("%s: dropping a half-written last line (%d characters)",
                    path, len(line))
        continue
      raise RunDirError(f"{path}: line {i + 1} is not JSON") from None
  return out


def _truncate_metrics(path: str, step: int) -> int:
  if not os.path.exists(path):
    return 0
  records = read_metrics(path)
  keep = [r for r in records if r.get("step", 0) < step]
  with open(path + ".tmp", "w") as f:
    f.writelines(json.dumps(r, allow_nan=True) + "\n" for r in keep)
  os.replace(path + ".tmp", path)
  return len(records) - len(keep)


def _truncate_events(path: str, step: int) -> int:
  """Rewrites an event file without the summaries at steps >= ``step``."""
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  kept, dropped, damaged = [], 0, False
  try:
    for raw in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(raw.numpy())
      if event.HasField("summary") and event.step >= step:
        dropped += 1
      else:
        kept.append(raw.numpy())
  except tf.errors.DataLossError:
    damaged = True
    log.warning("%s: dropping a half-written last event record", path)
  if dropped or damaged:
    with tf.io.TFRecordWriter(path + ".tmp") as w:
      for raw in kept:
        w.write(raw)
    os.replace(path + ".tmp", path)
  return dropped


def event_wall_times(folder: str) -> dict[int, tuple[int, float]]:
  """For each step with a summary in the folder's event files: the index of
  the file (in the order they were started, by their first summary's wall
  time; each process that trained the run wrote one) and the wall time of
  the step's last summary.  A half-written last record is ignored."""
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  files = []
  for path in glob.glob(os.path.join(folder, EVENTS)):
    events = []
    try:
      for raw in tf.data.TFRecordDataset(path):
        events.append(event_pb2.Event.FromString(raw.numpy()))
    except tf.errors.DataLossError:
      pass
    summaries = [e for e in events if e.HasField("summary")]
    if summaries:
      files.append((min(e.wall_time for e in summaries), path, summaries))
  out = {}
  for index, (_, _, events) in enumerate(sorted(files)):
    for event in events:
      out[event.step] = (index, max(event.wall_time, out.get(event.step, (0, 0.0))[1]))
  return out


class Checkpointer:
  """``tf.train.Checkpoint`` of ``objects`` plus the run's configuration.

  ``config`` (a JSON-able dict) is stored in the checkpoint itself, so a
  checkpoint that is copied or left in a folder carries the settings that
  made it; ``differences`` compares them with a new configuration.
  ``restore_directory``: where to resume from, if not ``directory`` (a
  multi-worker replica saves to a folder of its own but resumes from the
  chief's checkpoints).
  """

  CONFIG_KEY = "run_config/.ATTRIBUTES/VARIABLE_VALUE"

  def __init__(self, directory: str, config: dict, max_to_keep: int = 2,
               restore_directory: str | None = None, defaults: dict | None = None,
               **objects):
    self.config = _normalized(config)
    self.defaults = _normalized(defaults or {})
    self.run_config = tf.Variable(json.dumps(self.config, sort_keys=True),
                                  trainable=False)
    self.checkpoint = tf.train.Checkpoint(run_config=self.run_config, **objects)
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                              max_to_keep=max_to_keep)
    self.restore_directory = restore_directory

  @property
  def latest(self) -> str | None:
    if self.restore_directory is not None:
      return tf.train.latest_checkpoint(self.restore_directory)
    return self.manager.latest_checkpoint

  def saved_config(self) -> dict:
    return saved_config(self.latest)

  def differences(self, mutable: set) -> dict:
    """{field: (saved, now)} for the fields outside ``mutable`` that differ
    (a field the checkpoint predates counts as its default)."""
    return config_differences(self.saved_config(), self.config, mutable, self.defaults)

  def restore(self) -> None:
    from tf_sharpness.probes.base import restore_checkpoint
    restore_checkpoint(self.checkpoint, self.latest)
    self.run_config.assign(json.dumps(self.config, sort_keys=True))

  def save(self, step: int) -> None:
    self.manager.save(checkpoint_number=step)


def _normalized(config: dict) -> dict:
  """As JSON stores it (tuples become lists), so that saved and new compare."""
  return json.loads(json.dumps(config, sort_keys=True))


def saved_config(checkpoint: str) -> dict:
  """The run configuration stored in a checkpoint by ``Checkpointer``."""
  reader = tf.train.load_checkpoint(checkpoint)
  if not reader.has_tensor(Checkpointer.CONFIG_KEY):
    raise RunDirError(f"{checkpoint} was not written by tf-sharpness (it holds no "
                      "run configuration)")
  value = reader.get_tensor(Checkpointer.CONFIG_KEY)
  return json.loads(value.decode() if isinstance(value, bytes) else value)


def config_differences(saved: dict, now: dict, mutable, defaults=None) -> dict:
  """{field: (saved, now)} of the fields outside ``mutable`` that differ."""
  defaults = defaults or {}
  now = _normalized(now)
  return {k: (saved.get(k, defaults.get(k)), v) for k, v in now.items()
          if k not in mutable and saved.get(k, defaults.get(k)) != v}


def describe_differences(diff: dict) -> str:
  return "; ".join(f"`{k}` is {json.dumps(new)}, the checkpoint has {json.dumps(old)}"
                   for k, (old, new) in sorted(diff.items()))


def open_run(run_dir: RunDirectory, checkpointer: Checkpointer, *, resume: bool,
             overwrite: bool, mutable: set, restore_step) -> int:
  """Applies the rules of the module doc; returns the step to start at.

  ``restore_step()`` reads the step from the restored objects.
  """
  if resume and overwrite:
    raise RunDirError("`resume` and `overwrite` contradict each other: choose one")
  if overwrite:
    if run_dir.has_run():
      log.info("--overwrite: removing the earlier run's files in %s", run_dir.path)
    run_dir.remove_run()
    return 0
  if not resume:
    if run_dir.has_run():
      raise RunDirError(
          f"{run_dir.flag}={run_dir.path} already holds a run "
          f"({', '.join(os.path.basename(p) for p in run_dir.run_files()[:4])}); "
          "pass `resume` to continue it from its last checkpoint, or `overwrite` "
          "to delete it and start over")
    return 0
  if checkpointer.latest is None:
    if run_dir.has_run():
      raise RunDirError(
          f"`resume`: {run_dir.path} holds a run but no checkpoint to continue "
          "from (was it run without `checkpoint_every`?); pass `overwrite` to "
          "start over")
    log.info("--resume: nothing to resume in %s; starting a new run", run_dir.path)
    return 0
  diff = checkpointer.differences(mutable)
  if diff:
    raise RunDirError(f"`resume`: {checkpointer.latest} was made with other "
                      f"settings: {describe_differences(diff)}. Use the checkpoint's "
                      "values, or `overwrite` to start over")
  checkpointer.restore()
  step = int(restore_step())
  dropped = run_dir.truncate(step)
  log.info("resumed from %s at step %d%s", checkpointer.latest, step,
           f" (dropped {dropped} records the earlier run wrote after it)"
           if dropped else "")
  return step


def latest_checkpoint_step(path: str) -> int | None:
  """The step of the latest checkpoint of the run in ``path``, if any."""
  latest = tf.train.latest_checkpoint(os.path.join(path, CHECKPOINTS)) if path else None
  return int(latest.rsplit("-", 1)[1]) if latest else None
