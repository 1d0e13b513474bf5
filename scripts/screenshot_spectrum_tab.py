#!/usr/bin/env python3
"""A PNG of the TensorBoard Spectrum tab for a logdir (the README's picture).

Starts the real ``tensorboard --logdir LOGDIR`` on a free localhost port,
opens the Spectrum tab in headless Chromium (Playwright driving Debian's
``chromium``), waits until every card has drawn, and saves the page.

    python scripts/screenshot_spectrum_tab.py --logdir=runs/demo --out=docs/spectrum_tab.png

The runs of the README's picture:

    for lr in 0.01 0.05; do python scripts/train.py --flagfile=scripts/flags/quick.cfg \\
      --steps=100 --learning_rate=$lr --spectrum_every=25 --density_every=100 \\
      --slice_every=50 --slice_directions=1,3,5 --landscape_size=256 \\
      --landscape_minibatches=3 --step_analysis_every=50 --slice_2d_every=100 \\
      --slice_2d_points=7 --walk_steps=40:50 --walk_points=6 --eval_every=50 \\
      --logdir=runs/demo/lr_$lr; done
"""

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--logdir", required=True)
  p.add_argument("--out", default="spectrum_tab.png")
  p.add_argument("--width", type=int, default=1400)
  p.add_argument("--filter", default="", help="a tag filter to type in first")
  args = p.parse_args()
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  if not chromium:
    sys.exit("error: Debian's chromium is needed (apt-get install chromium)")
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  port = free_port()
  tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir,
                         "--host", "127.0.0.1", "--port", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.time() + 90
    while time.time() < deadline:
      try:
        with urllib.request.urlopen(url + "/data/plugins_listing", timeout=5) as r:
          if json.loads(r.read()).get("spectrum", {}).get("enabled"):
            break
      except OSError:
        pass
      time.sleep(0.5)
    with sync_playwright() as pw:
      browser = pw.chromium.launch(executable_path=chromium,
                                   args=["--no-sandbox", "--disable-gpu"])
      page = browser.new_page(viewport={"width": args.width, "height": 1000})
      page.goto(url + "/#spectrum")
      frame = page.frame_locator("iframe")
      frame.locator("#status").filter(has_text="updated").wait_for(timeout=120_000)
      if args.filter:
        frame.locator("#tag-filter").fill(args.filter)
      page.wait_for_timeout(1500)
      plugin = next(f for f in page.frames if "plugin_entry" in f.url)
      height = plugin.evaluate("document.body.scrollHeight")
      page.set_viewport_size({"width": args.width, "height": height + 80})
      page.wait_for_timeout(1500)
      page.screenshot(path=args.out, full_page=True)
      browser.close()
    print(f"{args.out}: {args.width} x {height + 80} px")
  finally:
    tb.terminate()
    tb.wait(timeout=30)


if __name__ == "__main__":
  main()
