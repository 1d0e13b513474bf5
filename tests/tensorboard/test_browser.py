"""The Spectrum tab in a real browser: the real `tensorboard --logdir` on a
free localhost port, a logdir of two runs written with tf_sharpness.summary
(no training), headless Chromium driven by Playwright.  .ci/run installs
Debian's chromium.  SPECTRUM_SCREENSHOT=PATH saves a full-page screenshot."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from tf_sharpness import summary

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
RUNS = ("lr_0.01", "lr_0.05")  # sorted: lr_0.01 gets the first run colour
EIGEN_STEPS = (0, 2, 4)
ALPHAS = (-16, -8, -4, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 2, 4, 8, 16)
# The SGD step length along each direction (training.py's "scale"): lr_0.01
# probes e1 and random only, at steps 2 and 4; lr_0.05 also e2, and step 0.
SLICE_SCALES = {"lr_0.05": {"e1": 1.2e-3, "e2": 5.6e-4, "random": 8.1e-5},
                "lr_0.01": {"e1": 3.4e-3, "random": 2.2e-4}}
SLICE_STEPS = {"lr_0.05": (0, 2, 4), "lr_0.01": (2, 4)}
DISTANCE = {"lr_0.05": 0.031, "lr_0.01": 0.0062}  # ||step|| per unit alpha, random
# lr_0.05 trains with NSGD (beta 0.9, gamma 0.5, c 2) and writes its own
# thresholds; lr_0.01 is plain SGD: the page draws 2(1+beta)/eta = 200 itself.
NSGD_THRESHOLDS = [{"label": "2(1+β)/(γη)", "value": 2 * 1.9 / (0.5 * 0.05)},
                   {"label": "2(1+β)/(cη)", "value": 2 * 1.9 / (2 * 0.05)}]
DIRECTIONS = ["e1", "e2", "random", "full step"]
# Directional curvature (DirectionalProbe): lr_0.05 also measures the
# update's critical sharpness, from step 2 on; lr_0.01's SGD threshold 2/eta
# moves with its decaying learning rate.
CURVATURE_DIRECTIONS = {"lr_0.01": ["gradient", "update"],
                        "lr_0.05": ["gradient", "update", "critical_update"]}
SGD_THRESHOLD = {step: 2 / (0.01 / (1 + 0.5 * step)) for step in EIGEN_STEPS}
# The full-data lambda_max interval (LambdaIntervalProbe), lr_0.05 only.
INTERVAL = {step: {"lower": 11.0 * (1 + 0.4 * step), "upper": 13.5 * (1 + 0.4 * step),
                   "plug_in": 12.0 * (1 + 0.4 * step),
                   "bias_corrected": 11.7 * (1 + 0.4 * step), "confidence": 0.9,
                   "examples": 400, "batches": 16}
            for step in EIGEN_STEPS}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _near_identity_rotation(rng, n=12, k=3, spread=0.25):
  """Overlaps |<e_i(t), e_j(t')>| and principal angles of a top-k subspace
  that turned a little between two measurements."""
  q, _ = np.linalg.qr(np.eye(n) + spread * rng.standard_normal((n, n)))
  m = q[:k, :k] * np.sign(np.diag(q)[:k])
  cosines = np.clip(np.linalg.svd(m, compute_uv=False), 0.0, 1.0)
  return np.abs(m), np.sort(np.arccos(cosines))


def _phase(c, width):
  """Kalra & Barkeshli's early-training regimes, boundaries moving with width."""
  for bound, phase in ((2, "sharpness reduction"), (4, "sharpening"),
                       (12 * (width / 64) ** 0.2, "loss catapult")):
    if c < bound:
      return phase
  return "divergence"


LAYERS = ("conv2d", "conv2d_1", "dense")


def _write_run(path, run, seed):
  """One run's summaries, written directly (the training code is not run)."""
  rng = np.random.default_rng(seed)
  nsgd = run == "lr_0.05"
  lr, momentum = (0.05, 0.9) if nsgd else (0.01, 0.0)
  sharp = 12.0 if nsgd else 10.0
  losses = np.array([2.303, 2.21, 2.14, 2.08, 2.03]) - (0.05 if nsgd else 0.0)
  writer = tf.summary.create_file_writer(path)
  with writer.as_default():
    for step in EIGEN_STEPS:
      # Progressive sharpening: lambda_1 grows towards the threshold.
      top = sharp * (1 + 0.4 * step) * np.array([1.0, 0.62, 0.41])
      residuals = 1e-3 * top
      if nsgd:  # explicit stability lines, as the probes write them
        summary.eigenvalues("hessian/top_eigenvalues", top, step, residuals=residuals,
                            learning_rate=lr, momentum=momentum, num_matvecs=42,
                            info={"subset": 400}, thresholds=NSGD_THRESHOLDS)
        summary.eigenvalues("hessian/preconditioned_top_eigenvalues", 0.7 * top, step,
                            learning_rate=lr, momentum=momentum, num_matvecs=48,
                            thresholds=[{"label": "2(1+β)/η", "value": 2 * 1.9 / lr}])
        summary.lambda_interval("hessian/lambda_max_interval", INTERVAL[step], step)
      else:
        summary.eigenvalues("hessian/top_eigenvalues", top, step, residuals=residuals,
                            learning_rate=lr, momentum=momentum, num_matvecs=36,
                            info={"subset": 400})
      curvatures = {"gradient": 0.5 * top[0], "update": 0.8 * top[0],
                    "critical_update": 0.9 * top[0]}
      summary.directional(
          "directional/curvature",
          {d: curvatures[d] for d in CURVATURE_DIRECTIONS[run]
           if step or d != "critical_update"}, step,
          thresholds=NSGD_THRESHOLDS if nsgd else [
              {"label": "2/η", "value": SGD_THRESHOLD[step]}])
    for step in ((0, 4) if nsgd else (4,)):
      grid = np.linspace(-2.0, sharp * 2.8 + 5, 160)
      top = sharp * (1 + 0.4 * step) * np.array([1.0, 0.62, 0.41])
      # A bulk near zero with slowly decaying tails, and the top outliers.
      dens = 0.97 * np.exp(-grid ** 2 / 0.5) / np.sqrt(0.5 * np.pi)
      dens += 1e-4 * np.exp(-np.abs(grid) / 4)
      for lam in top:
        dens += 0.01 * np.exp(-(grid - lam) ** 2 / 4.5) / np.sqrt(4.5 * np.pi)
      summary.density("hessian/density", grid, dens, step)
    a = np.array(ALPHAS, dtype=np.float64)
    for step in SLICE_STEPS[run]:
      for i, (d, scale) in enumerate(SLICE_SCALES[run].items()):
        curvature = (0.4, 0.2, 0.01)[i]
        slice_losses = losses[step] * (1 + curvature * (a / 16) ** 2 + 0.002 * a / 16)
        extra = {"distance": DISTANCE[run]} if d == "random" else None
        summary.loss_slice(f"landscape/slice_{d}", a, slice_losses, step, direction=d,
                           scale=scale * (1 + 0.1 * step), extra=extra)
    for step in range(4):  # the walk from theta_t to theta_{t+1}
      w = np.linspace(0.0, 1.0, 6)
      walk = losses[step] + (losses[step + 1] - losses[step]) * w + 0.08 * w * (1 - w)
      summary.loss_slice("landscape/walk", w, walk, step, direction="walk",
                         extra={"argmin": float(w[np.argmin(walk)]),
                                "min_loss": float(walk.min()), "convex": True})
    factors = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    for step in (2, 4):
      gain = np.array([[1.0], [0.6], [0.05], [1.2]])
      bend = np.array([[0.45], [0.2], [0.01], [0.5]]) * (2.0 if nsgd else 1.0)
      changes = 100 * (-gain * factors * 0.01 + bend * factors ** 2 * 0.01)
      summary.step_analysis("landscape/step_analysis", factors, changes, step,
                            directions=DIRECTIONS)
      grid = np.linspace(-1.0, 1.0, 7)
      sx, sy = 4 * SLICE_SCALES[run]["e1"], 4 * 5e-4
      z = losses[step] * (1 + 0.3 * grid[None, :] ** 2 + 0.12 * grid[:, None] ** 2)
      summary.surface("landscape/surface_e1_e2", grid * sx, grid * sy, z, step)
      overlaps, angles = _near_identity_rotation(rng)
      summary.rotation("hessian/rotation", overlaps, step, principal_angles=angles,
                       gradient_overlap=float(rng.uniform(0.3, 0.8)))
      share = rng.dirichlet(np.ones(3), size=2).T  # e1, e2 shares per layer
      summary.blocks("hessian/blocks", {
          name: {"top_eigenvalues": top[:2] * f} for name, f in zip(LAYERS, (0.9, 0.5, 0.1))},
          {name: share[i] for i, name in enumerate(LAYERS)}, step)
      summary.sharpness("sharpness", {"worst_l2": 0.01 * step, "avg": 0.002 * step},
                        step, stderr={"avg": 0.0005})
    if nsgd:  # an early-training sweep, as scripts/phase.py writes it
      summary.phase_diagram("phase_diagram", [
          {"c": c, "width": width, "depth": 4, "phase": _phase(c, width)}
          for width in (64, 128, 256, 512) for c in (0.5, 1, 2, 4, 8, 16, 32)])
  writer.close()


@pytest.fixture(scope="module")
def tensorboard_url(tmp_path_factory):
  logdir = str(tmp_path_factory.mktemp("tb"))
  for seed, run in enumerate(RUNS):
    _write_run(os.path.join(logdir, run), run, seed)
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", "--logdir", logdir,
       "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.time() + 90
    listing = {}
    while time.time() < deadline:
      try:
        with urllib.request.urlopen(url + "/data/plugins_listing", timeout=5) as r:
          listing = json.loads(r.read())
        if listing.get("spectrum", {}).get("enabled"):
          break
      except OSError:
        pass
      if proc.poll() is not None:
        raise RuntimeError(proc.stderr.read().decode()[-3000:])
      time.sleep(0.5)
    assert listing.get("spectrum", {}).get("enabled"), (
        f"the Spectrum plugin is not active: {listing.get('spectrum')}; is the "
        "package installed (pip install -e .) so its entry point is found?")
    assert listing["spectrum"]["tab_name"] == "Spectrum"
    yield url
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def _plain(html):
  return re.sub(r"<[^>]+>", "", html)


def _generation(frame):
  return frame.evaluate("Number(document.getElementById('status').dataset.generation || 0)")


def _wait_refreshed(frame, action):
  """Runs action() and waits until the refresh it starts has been drawn."""
  before = _generation(frame)
  action()
  frame.wait_for_function(
      "g => Number(document.getElementById('status').dataset.generation || 0) > g",
      arg=before, timeout=30_000)


def _data(frame, selector, expr="d.data"):
  return frame.evaluate(f"(() => {{ const d = document.querySelector({selector!r}); "
                        f"return {expr}; }})()")


def _names(frame, selector):
  return _data(frame, selector, "d.data.map(t => t.name)")


def _check_eigenvalues(frame):
  cards = frame.evaluate("[...document.querySelectorAll('.eigenvalues-card')]"
                         ".map(c => c.dataset.tag)")
  assert cards == ["hessian/preconditioned_top_eigenvalues", "hessian/top_eigenvalues"]
  top = ".card[data-tag='hessian/top_eigenvalues'] .eigenvalues-plot"
  traces = _data(frame, top, "d.data.map(t => ({name: t.name, x: t.x, y: t.y, "
                             "color: t.line.color, dash: t.line.dash}))")
  by_name = {t["name"]: t for t in traces}
  for run in RUNS:  # both runs overlaid on one card, lambda_1 in the run colour
    for i in (1, 2, 3):
      assert list(by_name[f"{run} λ{i}"]["x"]) == list(EIGEN_STEPS)
  # Thresholds: lr_0.05's own (NSGD), lr_0.01's from its learning rate;
  # dashed, in the run's colour.
  expected = {"lr_0.05 2(1+β)/(γη)": 152.0, "lr_0.05 2(1+β)/(cη)": 38.0,
              "lr_0.01 2(1+β)/η": 200.0}
  for name, value in expected.items():
    run = name.split()[0]
    assert by_name[name]["y"] == pytest.approx([value] * 3)
    assert by_name[name]["dash"] in ("dash", "dot", "dashdot", "longdash")
    assert by_name[name]["color"] == by_name[f"{run} λ1"]["color"]
  assert "lr_0.05 2(1+β)/η" not in by_name  # a payload's thresholds replace the default
  assert by_name["lr_0.05 λ1"]["color"] != by_name["lr_0.01 λ1"]["color"]
  precond = _names(frame, ".card[data-tag='hessian/preconditioned_top_eigenvalues'] "
                          ".eigenvalues-plot")
  assert precond == ["lr_0.05 λ1", "lr_0.05 λ2", "lr_0.05 λ3", "lr_0.05 2(1+β)/η"]
  # The first eigenvalue card's plot keeps its id.
  assert frame.evaluate("document.getElementById('eigenvalues-plot')"
                        ".classList.contains('eigenvalues-plot')")


def _check_directional_and_interval(frame):
  """The directional-curvature card, and the lambda_max interval's band on
  the top-eigenvalue card."""
  plot = ".card[data-tag='directional/curvature'] .directional-plot"
  traces = {t["name"]: t for t in _data(frame, plot, (
      "d.data.map(t => ({name: t.name, x: t.x, y: t.y, color: t.line.color, "
      "dash: t.line.dash || 'solid', mode: t.mode}))"))}
  curves = [f"{run} {d}" for run in RUNS for d in CURVATURE_DIRECTIONS[run]]
  thresholds = {"lr_0.01 2/η": [SGD_THRESHOLD[s] for s in EIGEN_STEPS],
                "lr_0.05 2(1+β)/(γη)": [152.0] * 3, "lr_0.05 2(1+β)/(cη)": [38.0] * 3}
  assert sorted(traces) == sorted(curves + list(thresholds))  # one trace per direction
  for name in curves:
    steps = [2, 4] if name.endswith("critical_update") else list(EIGEN_STEPS)
    assert traces[name]["x"] == steps and traces[name]["dash"] == "solid"
  lam1 = {t["name"]: t for t in _data(frame, ".card[data-tag='hessian/top_eigenvalues'] "
                                             ".eigenvalues-plot",
                                      "d.data.map(t => ({name: t.name, color: t.line.color}))")}
  for name, values in thresholds.items():  # drawn as on the eigenvalue cards
    run = name.split()[0]
    assert traces[name]["x"] == list(EIGEN_STEPS)
    assert traces[name]["y"] == pytest.approx(values)
    assert traces[name]["dash"] in ("dash", "dot", "dashdot", "longdash")
    assert traces[name]["mode"] == "lines"
    assert traces[name]["color"] == lam1[f"{run} λ1"]["color"]
    assert traces[name]["color"] == traces[f"{run} gradient"]["color"]
  # The interval: lr_0.05's lower edge, then its upper edge filled down to
  # it, beneath the eigenvalue lines; the bias-corrected values as markers.
  top = ".card[data-tag='hessian/top_eigenvalues'] .eigenvalues-plot"
  eig = _data(frame, top, "d.data.map(t => ({name: t.name, x: t.x, y: t.y, fill: t.fill, "
                          "mode: t.mode, legend: t.showlegend !== false, "
                          "fillcolor: t.fillcolor}))")
  bands = [i for i, t in enumerate(eig) if t["fill"] == "tonexty"]
  assert len(bands) == 1, [t["name"] for t in eig]
  upper, lower = eig[bands[0]], eig[bands[0] - 1]
  assert upper["name"] == "lr_0.05 full-data λ_max, 90% interval" and upper["legend"]
  assert not lower["legend"] and upper["fillcolor"].startswith("rgba(")
  assert upper["x"] == lower["x"] == list(EIGEN_STEPS)
  assert upper["y"] == pytest.approx([INTERVAL[s]["upper"] for s in EIGEN_STEPS])
  assert lower["y"] == pytest.approx([INTERVAL[s]["lower"] for s in EIGEN_STEPS])
  assert bands[0] < [t["name"] for t in eig].index("lr_0.05 λ1")
  corrected = next(t for t in eig if t["name"] == "lr_0.05 bias-corrected λ_max")
  assert corrected["mode"] == "markers"
  assert corrected["y"] == pytest.approx([INTERVAL[s]["bias_corrected"] for s in EIGEN_STEPS])
  assert not any(t["name"].startswith("lr_0.01") and ("interval" in t["name"] or t["fill"])
                 for t in eig)  # a run without the tag has no band
  precond = _data(frame, ".card[data-tag='hessian/preconditioned_top_eigenvalues'] "
                         ".eigenvalues-plot", "d.data.map(t => t.fill || '')")
  assert not any(precond)
  # The band's tag finds its card through the tag filter.
  box = frame.locator("#tag-filter")
  box.fill("lambda_max_interval")
  assert frame.locator(".card[data-tag='hessian/top_eigenvalues']").is_visible()
  assert not frame.locator(".card[data-tag='hessian/preconditioned_top_eigenvalues']").is_visible()
  assert not frame.locator("details[data-section='directional']").is_visible()
  box.fill("")
  assert frame.locator("details[data-section='directional']").is_visible()


def _check_slices(frame):
  assert frame.evaluate("document.querySelectorAll('.loss_slice-plot').length") == 1
  plot = ".card[data-tag='landscape/slice'] .loss_slice-plot"
  traces = _data(frame, plot, "d.data.map(t => ({run: t.meta.run, dir: t.meta.direction, "
                              "xaxis: t.xaxis, hover: t.hovertemplate, far: !!t.customdata}))")
  axes = {}
  for t in traces:
    axes.setdefault(t["dir"], set()).add(t["xaxis"])
  # Small multiples from left to right: e1, e2, random.
  assert axes == {"e1": {"x"}, "e2": {"x2"}, "random": {"x3"}}
  runs_of = lambda d: sorted(t["run"] for t in traces if t["dir"] == d)  # noqa: E731
  assert runs_of("e1") == list(RUNS) and runs_of("random") == list(RUNS)
  assert runs_of("e2") == ["lr_0.05"]
  assert all(t["far"] and "‖Δθ‖" in t["hover"] for t in traces if t["dir"] == "random")
  assert not any(t["far"] for t in traces if t["dir"] != "random")
  titles = [_plain(_data(frame, plot, f"d.layout.{ax}.title.text"))
            for ax in ("xaxis", "xaxis2", "xaxis3")]
  at4 = {run: {d: f"{s * 1.4:.1e}".replace("e-0", "e-") for d, s in scales.items()}
         for run, scales in SLICE_SCALES.items()}  # the scales written at step 4
  assert titles == [
      f"α (× {at4['lr_0.01']['e1']} | {at4['lr_0.05']['e1']}) along e1",
      f"α × {at4['lr_0.05']['e2']} along e2",
      f"α (× {at4['lr_0.01']['random']} | {at4['lr_0.05']['random']}) along random"]


def _check_other_cards(frame):
  walk = _data(frame, ".walk-plot",
               "d.data.map(t => ({name: t.name, x: t.x.filter(v => v !== null)}))")
  assert [t["name"] for t in walk] == list(RUNS)
  for t in walk:  # one continuous curve over the walked steps 0..3
    assert min(t["x"]) == 0 and max(t["x"]) == 4
  assert _names(frame, ".step_analysis-plot") == [
      f"{run} · {d}" for run in RUNS for d in DIRECTIONS]
  surfaces = _data(frame, ".surface-plot", "d.data.map(t => t.type + ' ' + t.xaxis)")
  assert surfaces == ["contour x", "contour x2"]  # one facet per run
  # Eigenvector rotation: principal angles and ||Pg||/||g|| of both runs over
  # the measurements after the first, each run's overlap matrix at a step.
  rot = _data(frame, ".rotation-plot",
              "({names: d.data.map(t => t.name), x: d.data[0].x,"
              " angles: d.data.filter(t => t.name.includes('angle')).map(t => t.y),"
              " g: d.data.filter(t => t.yaxis === 'y2').map(t => t.y)})")
  assert rot["names"] == [f"{run} · {n}" for run in RUNS
                          for n in ("angle 1", "angle 2", "angle 3", "‖P g‖ / ‖g‖")]
  assert list(rot["x"]) == [2, 4]
  assert all(0 <= a <= 90 for t in rot["angles"] for a in t)
  assert len(rot["g"]) == 2 and all(0 <= g <= 1 for t in rot["g"] for g in t)
  heat = _data(frame, ".overlap-plot", "d.data.map(t => t.z)")
  assert len(heat) == 2
  assert all(len(z) == 3 and all(len(r) == 3 and all(0 <= v <= 1 + 1e-9 for v in r) for r in z)
             for z in heat)
  # Per-layer curvature: per run, a layer x step heatmap of the blocks'
  # lambda_max and one of e1's share in each layer.
  blocks = frame.evaluate("[...document.querySelectorAll('.blocks-plot')].map(d => "
                          "d.data.map(t => ({type: t.type, y: t.y, x: t.x, z: t.z, "
                          "values: t.customdata})))")
  assert len(blocks) == 2
  for run_traces in blocks:
    assert [t["type"] for t in run_traces] == ["heatmap", "heatmap"]
    lam, share = run_traces
    assert lam["y"] == list(LAYERS) and lam["x"] == [2, 4]
    assert all(a > b for a, b in zip(lam["values"][0], lam["values"][1]))  # conv2d sharpest
    np.testing.assert_allclose(lam["z"], np.log10(lam["values"]))  # coloured by log10
    assert all(abs(sum(col) - 1) < 1e-9 for col in zip(*share["z"]))
  # Sharpness: one facet per measure, runs overlaid, error bars on avg only.
  sharp = _data(frame, ".sharpness-plot",
                "d.data.map(t => ({name: t.name, axis: t.xaxis, err: !!t.error_y}))")
  assert [(t["name"], t["axis"], t["err"]) for t in sharp] == [
      (f"{run} · {m}", axis, m == "avg") for m, axis in (("worst_l2", "x"), ("avg", "x2"))
      for run in RUNS]
  assert _names(frame, ".phase_diagram-plot") == [  # one run: plain phase names
      "divergence", "loss catapult", "sharpening", "sharpness reduction"]
  # Densities: runs overlaid at the slider's step; lr_0.01 has none at step 0.
  assert _names(frame, ".density-plot") == list(RUNS)
  frame.locator(".density-card .step-slider").fill("0")
  assert _names(frame, ".density-plot") == ["lr_0.05"]
  frame.locator(".density-card .step-slider").fill("1")
  assert _names(frame, ".density-plot") == list(RUNS)


def _check_filter_and_sections(frame):
  visible = lambda sel: frame.locator(sel).first.is_visible()  # noqa: E731
  slices = ".card[data-tag='landscape/slice']"
  density = ".card[data-tag='hessian/density']"
  box = frame.locator("#tag-filter")
  box.fill("DENSITY")  # case-insensitive
  assert visible(density) and not visible(slices) and not visible(".eigenvalues-card")
  assert not visible("details[data-section='slices']")
  box.fill("slice|walk")  # a regular expression
  assert visible(slices) and visible(".walk-card") and not visible(density)
  box.fill("slice_(")  # not a valid expression: a plain substring, matching nothing
  assert not visible(slices) and visible("#no-match")
  box.fill("")
  assert visible(slices) and visible(density) and not visible("#no-match")
  # Collapsing a section hides its cards, also across a refresh.
  frame.locator("details[data-section='density'] > summary").click()
  assert not visible(density) and visible(slices)
  _wait_refreshed(frame, lambda: frame.locator("#refresh").click())
  assert not visible(density)
  frame.locator("details[data-section='density'] > summary").click()
  assert visible(density)
  frame.wait_for_function("document.querySelector('.density-plot')"
                          ".getBoundingClientRect().width > 300")


def test_spectrum_tab_renders(tensorboard_url):
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  if not chromium:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
  sync_api = pytest.importorskip("playwright.sync_api")
  errors = []
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.on("console", lambda m: errors.append(f"{m.type}: {m.text} @ {m.location}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(tensorboard_url + "/#spectrum")
    page.frame_locator("iframe").locator("#eigenvalues-plot .main-svg").first.wait_for(
        timeout=60_000)
    frame = next(f for f in page.frames if "plugin_entry" in f.url)
    frame.wait_for_function("document.getElementById('status').dataset.generation",
                            timeout=60_000)
    sections = frame.evaluate("[...document.querySelectorAll('details.section')]"
                              ".map(d => [d.dataset.section, d.open])")
    assert sections == [[s, True] for s in (
        "eigenvalues", "directional", "rotation", "blocks", "sharpness", "density", "slices",
        "step_analysis", "walk", "surface", "phase_diagram")]
    # Compact: cards side by side, the page far shorter than a column of charts.
    tops = frame.evaluate("[...document.querySelectorAll('.eigenvalues-card')]"
                          ".map(c => [c.offsetTop, c.offsetLeft])")
    assert tops[0][0] == tops[1][0] and tops[0][1] < tops[1][1]
    height = frame.evaluate("document.body.scrollHeight")
    print(f"Spectrum page height for two runs at 1400 px: {height} px")
    assert height < 5000  # eleven sections, cards side by side
    _check_eigenvalues(frame)
    _check_directional_and_interval(frame)
    _check_slices(frame)
    _check_other_cards(frame)
    _check_filter_and_sections(frame)
    # The log-axis toggle (kept across refreshes) and the refresh button.
    frame.locator("#log-axis").check()
    frame.wait_for_function("[...document.querySelectorAll('.eigenvalues-plot')]"
                            ".every(d => d.layout.yaxis.type === 'log')")
    _wait_refreshed(frame, lambda: frame.locator("#refresh").click())
    assert frame.locator("#status").text_content().startswith("updated")
    assert frame.evaluate("document.getElementById('eigenvalues-plot').layout.yaxis.type") == "log"
    # Deselecting a run removes its traces; a card with one run names plainly.
    _wait_refreshed(frame, lambda: frame.locator("input[data-run='lr_0.01']").uncheck())
    names = _names(frame, ".card[data-tag='hessian/top_eigenvalues'] .eigenvalues-plot")
    assert names and all(not n.startswith("lr_0.01") for n in names)
    runs = _data(frame, ".loss_slice-plot", "d.data.map(t => t.meta.run)")
    assert set(runs) == {"lr_0.05"}
    assert _names(frame, ".step_analysis-plot") == DIRECTIONS
    assert _names(frame, ".rotation-plot") == [
        "angle 1", "angle 2", "angle 3", "‖P g‖ / ‖g‖"]
    _wait_refreshed(frame, lambda: frame.locator("input[data-run='lr_0.01']").check())
    frame.locator("#log-axis").uncheck()
    shot = os.environ.get("SPECTRUM_SCREENSHOT")
    if shot:  # the plugin scrolls inside its iframe: make the window tall enough
      page.set_viewport_size({"width": 1400, "height": height + 200})
      page.wait_for_timeout(1000)
      page.screenshot(path=shot, full_page=True)
    browser.close()
  ours = [e for e in errors if "spectrum" in e or "plugin_entry" in e or "pageerror" in e]
  assert not ours, ours
