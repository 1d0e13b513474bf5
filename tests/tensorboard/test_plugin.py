"""Summary ops round-trip through TensorBoard's data provider into the
Spectrum plugin's routes, and the routes' answers to bad requests."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.data import grpc_provider
from tensorboard.data import provider as provider_lib
from tensorboard.data.proto import data_provider_pb2
from tensorboard.plugins import base_plugin
from tensorboard.util import tensor_util
from werkzeug import test as werkzeug_test
from werkzeug import wrappers

from conftest import REPO
from tb_plugin import metadata
from tb_plugin import plugin as plugin_lib
from tf_sharpness import stability
from tf_sharpness import summary

PREFIX = "/data/plugin/spectrum"


DIRECTIONAL_STEPS = (0, 5, 10)
INTERVALS = {  # as LambdaIntervalProbe writes them, NaN residual included
    0: {"lower": 8.5, "upper": 11.25, "plug_in": 10.0, "bias_corrected": 9.5,
        "residual": float("nan"), "confidence": 0.9, "examples": 512, "batches": 16,
        "num_matvecs": 120, "examples_for_width_10pct": 2048},
    10: {"lower": 19.0, "upper": 23.5, "plug_in": 21.0, "bias_corrected": 20.25,
         "residual": 1e-3, "confidence": 0.95, "examples": 512, "batches": 16,
         "num_matvecs": 118, "examples_for_width_10pct": 1024}}


def directional_values(step, lr):
  """Curvature along the gradient and the update (and, after step 0, the
  update's critical sharpness), as DirectionalProbe measures it."""
  values = {"gradient": 2.0 + step, "update": 1.0 / lr + step}
  if step:
    values["critical_update"] = 3.0 * step
  return values


def write_logdir(logdir):
  """Two runs with every kind of summary (and 150 eigenvalue points)."""
  for run, lr in (("a", 0.1), ("b", 0.01)):
    writer = tf.summary.create_file_writer(os.path.join(logdir, run))
    with writer.as_default():
      for step in range(150):
        summary.eigenvalues("hessian/top", [10.0 + step, 5.0, 1.0], step,
                            residuals=[1e-3, 1e-3, 1e-2], learning_rate=lr,
                            momentum=0.9, num_matvecs=20)
      for step in (0, 10):
        summary.density("hessian/density", np.linspace(0, 1, 50),
                        np.full(50, 1.0), step)
        summary.loss_slice("slice/e1", [-1, 0, 1], [2.0, 1.0, 2.0 + step],
                           step, direction="e1", scale=0.5)
        summary.step_analysis("steps", [0.5, 1, 2], [[-1, -2, 3], [0, -1, 1]],
                              step, directions=["e1", "random"])
        summary.surface("surface", [0, 1], [0, 1, 2], np.ones((3, 2)), step)
      summary.phase_diagram("phase", [{"c": 2.0, "width": 256, "depth": 4,
                                       "phase": "catapult"}])
      for step in DIRECTIONAL_STEPS:  # a decaying learning rate: moving thresholds
        summary.directional("directional/curvature", directional_values(step, lr), step,
                            thresholds=[stability.Threshold("2/η", 2 / (lr / (1 + step)))])
      if run == "a":
        for step, interval in INTERVALS.items():
          summary.lambda_interval("hessian/lambda_max_interval", interval, step)
      # Payloads that lack a required key, under the new kinds' metadata.
      for kind, payload in (("directional", {"values": {"gradient": 1.0}}),
                            ("lambda_interval", {"lower": 1.0, "plug_in": 2.0,
                                                 "confidence": 0.9})):
        tf.summary.write(f"broken_{kind}", tf.constant(json.dumps(payload)), step=0,
                         metadata=metadata.create_summary_metadata(kind).SerializeToString())
      # A foreign tensor under our plugin name: a float, not a JSON string.
      tf.summary.write("broken", tf.constant([1.0, 2.0]), step=0,
                       metadata=metadata.create_summary_metadata(
                           "eigenvalues").SerializeToString())
    writer.close()


@pytest.fixture(scope="module")
def multiplexer_provider(tmp_path_factory):
  logdir = str(tmp_path_factory.mktemp("logs"))
  write_logdir(logdir)
  mux = plugin_event_multiplexer.EventMultiplexer(
      tensor_size_guidance={metadata.PLUGIN_NAME: 0})
  mux.AddRunsFromDirectory(logdir)
  mux.Reload()
  return tb_data_provider.MultiplexerDataProvider(mux, logdir), logdir


class _DataServerStub:
  """Answers TensorBoard's gRPC data-provider calls (what the Rust data
  server does by default) from a MultiplexerDataProvider, so that the
  plugin runs through the real ``GrpcDataProvider`` request building."""

  def __init__(self, provider):
    self._provider = provider

  def _ctx(self):
    return tb_context.RequestContext()

  def ListTensors(self, req):
    listing = self._provider.list_tensors(
        self._ctx(), experiment_id=req.experiment_id,
        plugin_name=req.plugin_filter.plugin_name)
    res = data_provider_pb2.ListTensorsResponse()
    for run, tags in listing.items():
      run_entry = res.runs.add(run_name=run)
      for tag, series in tags.items():
        entry = run_entry.tags.add(tag_name=tag)
        entry.metadata.max_step = series.max_step
        entry.metadata.max_wall_time = series.max_wall_time
        entry.metadata.summary_metadata.plugin_data.plugin_name = (
            req.plugin_filter.plugin_name)
        entry.metadata.summary_metadata.plugin_data.content = series.plugin_content
    return res

  def ReadTensors(self, req):
    data = self._provider.read_tensors(
        self._ctx(), experiment_id=req.experiment_id,
        plugin_name=req.plugin_filter.plugin_name,
        downsample=req.downsample.num_points,
        run_tag_filter=provider_lib.RunTagFilter(
            runs=list(req.run_tag_filter.runs.names),
            tags=list(req.run_tag_filter.tags.names)))
    res = data_provider_pb2.ReadTensorsResponse()
    for run, tags in data.items():
      run_entry = res.runs.add(run_name=run)
      for tag, datums in tags.items():
        entry = run_entry.tags.add(tag_name=tag)
        for d in datums:
          entry.data.step.append(d.step)
          entry.data.wall_time.append(d.wall_time)
          entry.data.value.append(tensor_util.make_tensor_proto(d.numpy))
    return res


@pytest.fixture(scope="module")
def client(multiplexer_provider):
  return _client(*multiplexer_provider)


@pytest.fixture(scope="module")
def grpc_client(multiplexer_provider):
  provider, logdir = multiplexer_provider
  return _client(grpc_provider.GrpcDataProvider(
      "test", _DataServerStub(provider)), logdir)


def _client(provider, logdir):
  ctx = base_plugin.TBContext(data_provider=provider, logdir=logdir,
                              sampling_hints={})
  plugin = plugin_lib.SpectrumPlugin(ctx)
  apps = plugin.get_plugin_apps()

  @wrappers.Request.application
  def dispatch(request):
    path = request.path[len(PREFIX):]
    if path.startswith("/static/"):
      return apps["/static/*"]
    if path in apps:
      return apps[path]
    return wrappers.Response("not found", status=404)

  return werkzeug_test.Client(dispatch)


def get(client, route, **params):
  response = client.get(PREFIX + route, query_string=params)
  return response.status_code, json.loads(response.get_data()) if (
      response.mimetype == "application/json") else response.get_data()


def test_tags(client):
  code, tags = get(client, "/tags")
  assert code == 200
  assert tags["a"]["hessian/top"] == "eigenvalues"
  assert tags["b"]["hessian/density"] == "density"
  assert tags["a"]["slice/e1"] == "loss_slice"
  assert tags["a"]["phase"] == "phase_diagram"
  for run in ("a", "b"):
    assert tags[run]["directional/curvature"] == "directional"
    assert tags[run]["broken_directional"] == "directional"
    assert tags[run]["broken_lambda_interval"] == "lambda_interval"
  assert tags["a"]["hessian/lambda_max_interval"] == "lambda_interval"
  assert "hessian/lambda_max_interval" not in tags["b"]


@pytest.mark.parametrize("which", ["multiplexer", "grpc"])
def test_directional_route_keeps_values_and_thresholds(client, grpc_client, which):
  c = client if which == "multiplexer" else grpc_client
  for run, lr in (("a", 0.1), ("b", 0.01)):
    code, body = get(c, "/directional", run=run, tag="directional/curvature")
    assert code == 200, body
    assert [p["step"] for p in body] == list(DIRECTIONAL_STEPS)
    for p in body:
      assert p["values"] == pytest.approx(directional_values(p["step"], lr))
      assert p["thresholds"] == [
          {"label": "2/η", "value": pytest.approx(2 * (1 + p["step"]) / lr)}]
  code, one = get(c, "/directional", run="a", tag="directional/curvature", step=5)
  assert code == 200 and [p["values"]["critical_update"] for p in one] == [15.0]


@pytest.mark.parametrize("which", ["multiplexer", "grpc"])
def test_lambda_interval_route_keeps_the_interval(client, grpc_client, which):
  c = client if which == "multiplexer" else grpc_client
  code, body = get(c, "/lambda_interval", run="a", tag="hessian/lambda_max_interval")
  assert code == 200, body
  assert [p["step"] for p in body] == sorted(INTERVALS)
  for p in body:
    expected = dict(INTERVALS[p["step"]])
    if expected["residual"] != expected["residual"]:
      expected["residual"] = None  # NaN is written as null
    assert {k: p[k] for k in expected} == expected
  code, body = get(c, "/lambda_interval", run="b", tag="hessian/lambda_max_interval")
  assert code == 404 and "no Spectrum tag" in body["error"]


def test_eigenvalues_all_runs_keep_every_point(client):
  code, everything = get(client, "/eigenvalues")
  assert code == 200  # the malformed "broken" series is left out, not fatal
  assert set(everything["a"]) == {"hessian/top"}
  code, body = get(client, "/eigenvalues", tag="hessian/top")
  assert code == 200
  assert set(body) == {"a", "b"}
  points = body["a"]["hessian/top"]
  assert [p["step"] for p in points] == list(range(150))
  assert points[7]["values"] == [17.0, 5.0, 1.0]
  assert points[0]["learning_rate"] == 0.1 and points[0]["momentum"] == 0.9
  assert points[0]["residuals"] == [1e-3, 1e-3, 1e-2]
  code, one = get(client, "/eigenvalues", run="b", tag="hessian/top", step=3)
  assert code == 200 and len(one) == 1 and one[0]["values"][0] == 13.0
  code, few = get(client, "/eigenvalues", run="b", tag="hessian/top", downsample=10)
  assert code == 200 and len(few) == 10


@pytest.mark.parametrize("route,tag,key", [
    ("/density", "hessian/density", "density"), ("/slices", "slice/e1", "losses"),
    ("/step_analysis", "steps", "changes"), ("/surface", "surface", "losses"),
    ("/phase_diagram", "phase", "records")])
def test_kind_routes(client, route, tag, key):
  code, body = get(client, route, run="a", tag=tag)
  assert code == 200, body
  assert body and key in body[-1]
  if route == "/slices":
    assert body[-1]["losses"] == [2.0, 1.0, 12.0] and body[-1]["scale"] == 0.5
  if route == "/step_analysis":
    assert body[0]["changes"] == [[-1, -2, 3], [0, -1, 1]]


@pytest.mark.parametrize("route,params,code,message", [
    ("/density", {"run": "zzz", "tag": "hessian/density"}, 404, "no Spectrum data for run"),
    ("/density", {"run": "a", "tag": "nope"}, 404, "no Spectrum tag"),
    ("/density", {"run": "a"}, 400, "run and tag are required"),
    ("/density", {"run": "a", "tag": "hessian/density", "step": "abc"}, 400,
     "step must be an integer"),
    ("/density", {"run": "a", "tag": "hessian/top"}, 400, "holds 'eigenvalues' data"),
    ("/eigenvalues", {"run": "a", "tag": "broken"}, 422, "scalar string tensor"),
    ("/directional", {"run": "a", "tag": "broken_directional"}, 422,
     "directional payload lacks one of ('values', 'thresholds')"),
    ("/lambda_interval", {"run": "b", "tag": "broken_lambda_interval"}, 422,
     "lambda_interval payload lacks one of ('lower', 'upper', 'plug_in', 'confidence')"),
    ("/lambda_interval", {"run": "a", "tag": "directional/curvature"}, 400,
     "holds 'directional' data, not 'lambda_interval'"),
    ("/directional", {"run": "a", "tag": "hessian/lambda_max_interval"}, 400,
     "holds 'lambda_interval' data, not 'directional'"),
    ("/eigenvalues", {"downsample": "0"}, 400,
     "downsample must be an integer in [1, 9223372036854775807], got 0"),
])
def test_bad_requests_answer_4xx_json(client, route, params, code, message):
  got, body = get(client, route, **params)
  assert got == code
  assert message in body["error"]


def test_grpc_data_provider_path_answers(grpc_client):
  code, few = get(grpc_client, "/eigenvalues", run="b", tag="hessian/top",
                  downsample=10)
  assert code == 200 and len(few) == 10
  code, body = get(grpc_client, "/density", run="a", tag="hessian/density", step=10)
  assert code == 200 and [p["step"] for p in body] == [10]


INT64 = "[-9223372036854775808, 9223372036854775807]"


@pytest.mark.parametrize("params,message", [
    ({"downsample": str(10**30)},
     "downsample must be an integer in [1, 9223372036854775807], got 1" + "0" * 30),
    ({"downsample": str(2**63)}, "downsample must be an integer in [1, 9223372036854775807]"),
    ({"downsample": "-3"}, "downsample must be an integer in [1, 9223372036854775807], got -3"),
    ({"downsample": "1" * 5000}, "in [1, 9223372036854775807], got " + "1" * 40 + "..."),
    ({"downsample": "1e3"}, "downsample must be an integer in [1, 9223372036854775807], got '1e3'"),
    ({"step": str(10**30)}, f"step must be an integer in {INT64}, got 1" + "0" * 30),
    ({"step": str(-2**63 - 1)}, f"step must be an integer in {INT64}"),
])
@pytest.mark.parametrize("which", ["multiplexer", "grpc"])
def test_out_of_range_integers_answer_400(client, grpc_client, which, params,
                                          message):
  c = client if which == "multiplexer" else grpc_client
  for route, extra in (("/eigenvalues", {}),
                       ("/density", {"run": "a", "tag": "hessian/density"})):
    got, body = get(c, route, **extra, **params)
    assert got == 400, body
    assert message in body["error"] and len(body["error"]) < 200


@pytest.mark.parametrize("which", ["multiplexer", "grpc"])
def test_largest_allowed_integers_are_accepted(client, grpc_client, which):
  c = client if which == "multiplexer" else grpc_client
  code, body = get(c, "/eigenvalues", run="a", tag="hessian/top",
                   downsample=str(2**63 - 1))
  assert code == 200 and len(body) == 150
  code, body = get(c, "/eigenvalues", run="a", tag="hessian/top",
                   step=str(2**63 - 1))
  assert code == 200 and body == []


@pytest.mark.parametrize("path", ["/static/../plugin.py", "/static/..%2Fplugin.py",
                                  "/static/%2e%2e/metadata.py", "/static/nope.js"])
def test_static_route_refuses_traversal(client, path):
  response = client.get(PREFIX + path)
  assert response.status_code == 404


def test_static_and_vendor_files(client):
  code, body = get(client, "/index.js")
  assert code == 200 and b"export async function render" in body
  response = client.get(PREFIX + "/vendor/plotly.min.js")
  assert response.status_code == 200 and len(response.get_data()) > 1_000_000
  assert client.get(PREFIX + "/static/style.css").status_code == 200


def test_plugin_imports_without_tensorflow():
  code = ("import sys; import tb_plugin.plugin, tb_plugin.metadata; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_loader_keeps_every_sample_by_default():
  flags = argparse.Namespace(samples_per_plugin={})
  plugin_lib.SpectrumLoader().fix_flags(flags)
  assert flags.samples_per_plugin == {"spectrum": 0}
  flags = argparse.Namespace(samples_per_plugin={"spectrum": 5})
  plugin_lib.SpectrumLoader().fix_flags(flags)
  assert flags.samples_per_plugin == {"spectrum": 5}


def test_summary_ops_validate_input(tmp_path):
  with tf.summary.create_file_writer(str(tmp_path)).as_default():
    with pytest.raises(ValueError, match="differ in length"):
      summary.density("d", [0, 1], [1], 0)
    with pytest.raises(ValueError, match="changes must have shape"):
      summary.step_analysis("s", [1, 2], [[1, 2, 3]], 0, directions=["e1"])
    with pytest.raises(ValueError, match="values must not be empty"):
      summary.eigenvalues("e", [], 0)
    # NaN becomes null, not invalid JSON
    assert summary.eigenvalues("e", [float("nan"), 1.0], 0)
  with pytest.raises(ValueError, match="kind must be one of"):
    metadata.create_summary_metadata("histogram")
  with pytest.raises(ValueError, match="not Spectrum plugin metadata"):
    metadata.parse_plugin_content(b"\x00garbage")
