"""Plugin name and summary metadata of the Spectrum plugin (no TensorFlow).

Every summary is a scalar string tensor holding one JSON object (the
per-step payload); the metadata's plugin content is a small JSON object
``{"version": 1, "kind": KIND}`` that says how to read it.  Anything that
varies per step (the learning rate included) lives in the payload.
"""

from __future__ import annotations

import json

from tensorboard.compat.proto import summary_pb2

PLUGIN_NAME = "spectrum"
VERSION = 1
KINDS = ("eigenvalues", "density", "loss_slice", "step_analysis", "surface",
         "phase_diagram", "rotation", "blocks", "sharpness", "directional", "lambda_interval")


def create_summary_metadata(kind: str, description: str = "") -> summary_pb2.SummaryMetadata:
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  content = json.dumps({"version": VERSION, "kind": kind}).encode("utf-8")
  return summary_pb2.SummaryMetadata(
      summary_description=description,
      plugin_data=summary_pb2.SummaryMetadata.PluginData(
          plugin_name=PLUGIN_NAME, content=content),
      data_class=summary_pb2.DATA_CLASS_TENSOR)


def parse_plugin_content(content: bytes) -> dict:
  """Returns {"version", "kind"}; raises ValueError on foreign content."""
  try:
    meta = json.loads(content.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"not Spectrum plugin metadata: {e}") from e
  if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
    raise ValueError(f"not Spectrum plugin metadata: {meta!r}")
  if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
    raise ValueError(f"unsupported Spectrum metadata version {meta.get('version')!r}")
  return meta
