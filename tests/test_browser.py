"""The Spectrum tab in a real browser: the real `tensorboard --logdir` on a
free localhost port, a logdir written by scripts/train.py, headless Chromium
driven by Playwright.  .ci/run installs Debian's chromium."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import json

import pytest

from conftest import REPO
from tf_sharpness import flags as flags_lib
from tf_sharpness import training

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train(logdir, lr, **probes):
  cfg = training.Config(logdir=logdir, dataset="cifar10_mini", train_size=200,
                        model="fcn", depth=1, width=16, batch_size=50, steps=4,
                        learning_rate=lr, spectrum_every=2, spectrum_k=3,
                        spectrum_iters=30, hessian_size=40, density_every=4,
                        density_runs=2, density_iters=15, eval_every=0, **probes)
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "train.py"),
                         *flags_lib.flagfile_text(cfg).split()],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def tensorboard_url(tmp_path_factory):
  logdir = str(tmp_path_factory.mktemp("tb"))
  _train(os.path.join(logdir, "lr_0.05"), 0.05, slice_every=2,
         slice_directions=(1, 2), step_analysis_every=2, slice_2d_every=2,
         slice_2d_points=5, walk_steps="0:4", walk_points=6, landscape_size=100,
         landscape_minibatches=2)
  _train(os.path.join(logdir, "lr_0.01"), 0.01)
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
    frame = page.frame_locator("iframe")
    frame.locator("#eigenvalues-plot .main-svg").first.wait_for(timeout=60_000)
    frame.locator(".density-plot .main-svg").first.wait_for(timeout=30_000)
    for kind in ("loss_slice", "step_analysis", "surface"):
      frame.locator(f".{kind}-plot .main-svg").first.wait_for(timeout=30_000)
    plugin_frame = next(f for f in page.frames if "plugin_entry" in f.url)
    # The walk between iterates is one continuous curve across the steps.
    walk_x = plugin_frame.evaluate(
        "[...document.querySelectorAll('.loss_slice-plot')].map(d => d.data[0])"
        ".filter(t => t.name === 'walk')[0].x.filter(v => v !== null)")
    assert min(walk_x) == 0 and max(walk_x) == 4
    bars = plugin_frame.evaluate(
        "document.querySelector('.step_analysis-plot').data.map(t => t.name)")
    assert bars == ["e1", "e2", "random", "full step"]
    # Eigenvector rotation: principal angles and ||Pg||/||g|| over the
    # measurements after the first, and the overlap matrix at a step.
    frame.locator(".rotation-plot .main-svg").first.wait_for(timeout=30_000)
    frame.locator(".overlap-plot .main-svg").first.wait_for(timeout=30_000)
    rot = plugin_frame.evaluate(
        "(() => { const d = document.querySelector('.rotation-plot').data;"
        " const h = document.querySelector('.overlap-plot').data[0];"
        " return {names: d.map(t => t.name), x: d[0].x, angles: d.slice(0, 3).map(t => t.y),"
        " g: d[3].y, z: h.z}; })()")
    assert rot["names"] == ["angle 1", "angle 2", "angle 3", "‖P g‖ / ‖g‖"]
    assert list(rot["x"]) == [2, 4]
    assert all(0 <= a <= 90 for t in rot["angles"] for a in t)
    assert all(0 <= g <= 1 for g in rot["g"])
    assert len(rot["z"]) == 3 and all(len(r) == 3 and all(0 <= v <= 1 + 1e-9 for v in r)
                                      for r in rot["z"])
    names = plugin_frame.evaluate(
        "document.getElementById('eigenvalues-plot').data.map(t => t.name)")
    for run in ("lr_0.05", "lr_0.01"):
      for i in (1, 2, 3):
        assert f"{run} λ{i}" in names
      assert f"{run} 2(1+β)/η" in names
    thresholds = plugin_frame.evaluate(
        "document.getElementById('eigenvalues-plot').data"
        ".filter(t => t.name.endsWith('/η')).map(t => t.y[0])")
    assert sorted(round(t) for t in thresholds) == [40, 200]
    steps = plugin_frame.evaluate(
        "document.getElementById('eigenvalues-plot').data[0].x")
    assert list(steps) == [0, 2, 4]
    # The log-axis toggle and the refresh button work.
    frame.locator("#log-axis").check()
    frame.locator("#eigenvalues-plot .main-svg").first.wait_for()
    page.wait_for_timeout(500)
    assert plugin_frame.evaluate(
        "document.getElementById('eigenvalues-plot').layout.yaxis.type") == "log"
    frame.locator("#refresh").click()
    frame.locator("#status").filter(has_text="updated").wait_for(timeout=30_000)
    # Deselecting a run removes its traces from the shared views.
    frame.locator("input[data-run='lr_0.01']").uncheck()
    page.wait_for_timeout(1500)
    names = plugin_frame.evaluate(
        "document.getElementById('eigenvalues-plot').data.map(t => t.name)")
    assert all(not n.startswith("lr_0.01") for n in names)
    frame.locator("input[data-run='lr_0.01']").check()
    page.wait_for_timeout(1500)
    shot = os.environ.get("SPECTRUM_SCREENSHOT")
    if shot:
      page.screenshot(path=shot, full_page=True)
    browser.close()
  ours = [e for e in errors if "spectrum" in e or "plugin_entry" in e or "pageerror" in e]
  assert not ours, ours
