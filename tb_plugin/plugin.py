"""The TensorBoard "Spectrum" tab: routes that read our summaries through the
data provider, and the static page that draws them.

Imports no TensorFlow: TensorBoard loads plugins through the
``tensorboard_plugins`` entry point, and an import error or a raising
constructor would silently hide the tab.

Routes (all under ``/data/plugin/spectrum``):

* ``/index.js``, ``/static/<file>``: the page (an ES module) and its assets;
* ``/vendor/plotly.min.js``: the charting library, from the installed
  ``plotly`` package (no CDN: users are often offline);
* ``/tags``: ``{run: {tag: kind}}`` of every Spectrum summary;
* ``/eigenvalues``, ``/density``, ``/slices``, ``/step_analysis``,
  ``/surface``, ``/phase_diagram``, ``/rotation``, ``/blocks``,
  ``/sharpness``, ``/directional``, ``/lambda_interval``: ``?run=R&tag=T``
  (``run`` optional for ``/eigenvalues``: all runs), answering
  ``[{"step", "wall_time", ...payload}]`` sorted by step; ``?step=N`` keeps
  only that step, ``?downsample=N`` (1 <= N < 2**63) caps the number of
  points.

Bad requests answer a 4xx JSON ``{"error": ...}``; nothing is read from disk
but the plugin's own static files and plotly's bundle.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re

from werkzeug import wrappers

from tensorboard import errors
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin

from tb_plugin import metadata

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
DEFAULT_DOWNSAMPLE = 100_000
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1  # steps and downsample are int64
ROUTE_KINDS = {
    "/eigenvalues": "eigenvalues",
    "/density": "density",
    "/slices": "loss_slice",
    "/step_analysis": "step_analysis",
    "/surface": "surface",
    "/phase_diagram": "phase_diagram",
    "/rotation": "rotation",
    "/blocks": "blocks",
    "/sharpness": "sharpness",
    "/directional": "directional",
    "/lambda_interval": "lambda_interval",
}
REQUIRED_KEYS = {
    "eigenvalues": ("values",),
    "density": ("grid", "density"),
    "loss_slice": ("alphas", "losses"),
    "step_analysis": ("factors", "changes", "directions"),
    "surface": ("xs", "ys", "losses"),
    "phase_diagram": ("records",),
    "blocks": ("blocks", "top_eigenvalues", "mass"),
    "sharpness": ("values",),
    "rotation": ("overlaps",),
    "directional": ("values", "thresholds"),
    "lambda_interval": ("lower", "upper", "plug_in", "confidence"),
}


def _plotly_bundle() -> str | None:
  try:
    import plotly  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  path = os.path.join(os.path.dirname(plotly.__file__), "package_data",
                      "plotly.min.js")
  return path if os.path.isfile(path) else None


def _error(request, code: int, message: str):
  return http_util.Respond(request, {"error": message}, "application/json",
                           code=code)


class SpectrumPlugin(base_plugin.TBPlugin):
  """Hessian spectra, densities and loss-landscape probes."""

  plugin_name = metadata.PLUGIN_NAME

  def __init__(self, context):
    self._data_provider = context.data_provider
    hints = context.sampling_hints or {}
    hint = hints.get(self.plugin_name)
    self._downsample = DEFAULT_DOWNSAMPLE if not hint else int(hint)

  def get_plugin_apps(self):
    apps = {
        "/index.js": self._serve_index,
        "/static/*": self._serve_static,
        "/vendor/plotly.min.js": self._serve_plotly,
        "/tags": self._serve_tags,
    }
    for route, kind in ROUTE_KINDS.items():
      apps[route] = self._series_route(kind)
    return apps

  def is_active(self):
    return False  # activity comes from data_plugin_names() and the provider

  def data_plugin_names(self):
    return (self.plugin_name,)

  def frontend_metadata(self):
    return base_plugin.FrontendMetadata(es_module_path="/index.js",
                                        tab_name="Spectrum")

  # --------------------------------------------------------------- static

  @wrappers.Request.application
  def _serve_index(self, request):
    return self._file(request, os.path.join(STATIC_DIR, "index.js"))

  @wrappers.Request.application
  def _serve_static(self, request):
    name = request.path.rsplit("/static/", 1)[-1]
    allowed = set(os.listdir(STATIC_DIR))
    if name not in allowed:  # a fixed list: no traversal, no subfolders
      return _error(request, 404, f"no static file {name!r}")
    return self._file(request, os.path.join(STATIC_DIR, name))

  @wrappers.Request.application
  def _serve_plotly(self, request):
    path = _plotly_bundle()
    if path is None:
      return _error(request, 404, "the plotly package is not installed: "
                    "pip install plotly")
    return self._file(request, path, expires=3600)

  def _file(self, request, path, expires=0):
    with open(path, "rb") as f:
      body = f.read()
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if path.endswith(".js"):
      mime = "text/javascript"
    return http_util.Respond(request, body, mime, expires=expires)

  # ----------------------------------------------------------------- data

  def _list(self, request):
    ctx = plugin_util.context(request.environ)
    eid = plugin_util.experiment_id(request.environ)
    return self._data_provider.list_tensors(
        ctx, experiment_id=eid, plugin_name=self.plugin_name)

  def tags_impl(self, request) -> dict:
    out = {}
    for run, tags in self._list(request).items():
      for tag, series in tags.items():
        try:
          kind = metadata.parse_plugin_content(series.plugin_content)["kind"]
        except ValueError:
          continue  # foreign or newer data under our plugin name
        out.setdefault(run, {})[tag] = kind
    return out

  @wrappers.Request.application
  def _serve_tags(self, request):
    return http_util.Respond(request, self.tags_impl(request), "application/json")

  def _series_route(self, kind):
    @wrappers.Request.application
    def route(request):
      try:
        body = self.series_impl(request, kind)
      except errors.PublicError as e:
        code = 404 if isinstance(e, errors.NotFoundError) else 400
        return _error(request, code, str(e))
      except _Malformed as e:
        return _error(request, 422, str(e))
      return http_util.Respond(request, body, "application/json")
    return route

  def series_impl(self, request, kind: str):
    run = request.args.get("run")
    tag = request.args.get("tag")
    step = _int_arg(request, "step", INT64_MIN, INT64_MAX)
    downsample = _int_arg(request, "downsample", 1, INT64_MAX)
    if downsample is None:
      downsample = self._downsample
    tags = self.tags_impl(request)
    many = kind == "eigenvalues" and run is None
    if many:
      wanted = {(r, t) for r, ts in tags.items() for t, k in ts.items()
                if k == kind and (tag is None or t == tag)}
    else:
      if not run or not tag:
        raise errors.InvalidArgumentError("run and tag are required")
      if run not in tags:
        raise errors.NotFoundError(f"no Spectrum data for run {run!r}")
      if tags[run].get(tag) is None:
        raise errors.NotFoundError(f"no Spectrum tag {tag!r} in run {run!r}")
      if tags[run][tag] != kind:
        raise errors.InvalidArgumentError(
            f"tag {tag!r} holds {tags[run][tag]!r} data, not {kind!r}")
      wanted = {(run, tag)}
    if not wanted:
      return {}
    ctx = plugin_util.context(request.environ)
    eid = plugin_util.experiment_id(request.environ)
    data = self._data_provider.read_tensors(
        ctx, experiment_id=eid, plugin_name=self.plugin_name,
        downsample=downsample,
        run_tag_filter=provider.RunTagFilter(runs=sorted({r for r, _ in wanted}),
                                             tags=sorted({t for _, t in wanted})))
    out = {}
    for r, by_tag in data.items():
      for t, datums in by_tag.items():
        if (r, t) not in wanted:
          continue
        points = []
        try:
          for d in datums:
            if step is not None and d.step != step:
              continue
            points.append({"step": d.step, "wall_time": d.wall_time,
                           **_decode(d.numpy, kind, r, t, d.step)})
        except _Malformed:
          if many:  # one foreign series must not hide all the others
            continue
          raise
        out.setdefault(r, {})[t] = points
    if many:
      return out
    return out.get(run, {}).get(tag, [])


class _Malformed(ValueError):
  pass


_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


def _int_arg(request, name, low, high):
  """The integer query argument ``name`` in [low, high], or None if absent.

  Out-of-range values are refused here: the data providers take int64
  (the gRPC one would raise ValueError, an HTTP 500).
  """
  value = request.args.get(name)
  if value is None or value == "":
    return None
  shown = value if len(value) <= 40 else value[:40] + "..."
  if not _INTEGER.fullmatch(value):
    raise errors.InvalidArgumentError(
        f"{name} must be an integer in [{low}, {high}], got {shown!r}")
  # int() refuses strings of over 4,300 digits; any over 25 are out of range.
  digits = value.strip().lstrip("+-").lstrip("0")
  number = int(value) if len(digits) <= 25 else None
  if number is None or not low <= number <= high:
    raise errors.InvalidArgumentError(
        f"{name} must be an integer in [{low}, {high}], got {shown}")
  return number


def _decode(array, kind, run, tag, step) -> dict:
  """The JSON payload of one datum; raises _Malformed for foreign data."""
  where = f"run {run!r} tag {tag!r} step {step}"
  if getattr(array, "shape", None) != () or array.dtype.kind not in ("O", "S"):
    raise _Malformed(f"{where}: expected a scalar string tensor, got shape "
                     f"{getattr(array, 'shape', None)} dtype "
                     f"{getattr(array, 'dtype', None)}")
  raw = array.item()
  try:
    payload = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise _Malformed(f"{where}: payload is not JSON ({e})")
  if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED_KEYS[kind]):
    raise _Malformed(f"{where}: {kind} payload lacks one of {REQUIRED_KEYS[kind]}")
  return payload


class SpectrumLoader(base_plugin.TBLoader):
  """Loads the plugin; keeps every spectrum point unless the user says
  otherwise (TensorBoard keeps only a few samples per tensor tag by default)."""

  def fix_flags(self, flags):
    samples = getattr(flags, "samples_per_plugin", None)
    if isinstance(samples, dict):
      samples.setdefault(metadata.PLUGIN_NAME, 0)

  def load(self, context):
    return SpectrumPlugin(context)
