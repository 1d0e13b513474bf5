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
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test
from werkzeug import wrappers

from conftest import REPO
from tb_plugin import metadata
from tb_plugin import plugin as plugin_lib
from tf_sharpness import summary

PREFIX = "/data/plugin/spectrum"


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
      # A foreign tensor under our plugin name: a float, not a JSON string.
      tf.summary.write("broken", tf.constant([1.0, 2.0]), step=0,
                       metadata=metadata.create_summary_metadata(
                           "eigenvalues").SerializeToString())
    writer.close()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
  logdir = str(tmp_path_factory.mktemp("logs"))
  write_logdir(logdir)
  mux = plugin_event_multiplexer.EventMultiplexer(
      tensor_size_guidance={metadata.PLUGIN_NAME: 0})
  mux.AddRunsFromDirectory(logdir)
  mux.Reload()
  provider = tb_data_provider.MultiplexerDataProvider(mux, logdir)
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
    ("/eigenvalues", {"downsample": "0"}, 400, "downsample must be >= 1"),
])
def test_bad_requests_answer_4xx_json(client, route, params, code, message):
  got, body = get(client, route, **params)
  assert got == code
  assert message in body["error"]


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
