#!/usr/bin/env python3
"""Top-k Hessian eigenvalues of a model with tens of millions of parameters,
with peak memory, and the accuracy cost of the float32 Lanczos basis.

Two measurements, each in a fresh process (peak RSS is per process):

1. ``large``: keras.applications.ResNet50(weights=None) on 32x32 CIFAR-10
   images (23.5M parameters): the top-k eigenvalues at tol (relative Ritz
   residual), the HVPs and wall time it took, and the peak resident memory
   of the process.  The Lanczos basis is stored in float32 (the model's
   dtype); in float64 it would take twice the memory.
2. ``accuracy``: on SimpleCNN (F=100, k=5: 2.4M parameters, where both fit),
   the same measurement with a float32 and a float64 basis from the same start:
   the relative difference of the eigenvalues and the true residuals
   ||H v - lambda v|| / lambda_max of the returned vectors (extra HVPs).

    python benchmarks/large_model.py [--examples=64] [--k=5] [--tol=1e-3]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARED = os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg.tar.gz")


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def images(n):
  from tf_sharpness import data  # pylint: disable=g-import-not-at-top
  source = SHARED if os.path.exists(SHARED) else "cifar10_mini"
  ds = data.prepare(data.load(source), train_size=max(n, 10), seed=0)
  return ds.train_x[:n], ds.train_y[:n], source


def build(name):
  import keras  # pylint: disable=g-import-not-at-top
  from tf_sharpness import models  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  if name == "resnet50":
    return keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10,
                                       classifier_activation=None)
  return models.simple_cnn((32, 32, 3), 10, filters=100, kernel_size=5)


def measure(args, model_name, basis_dtype):
  """One top-k measurement in this process; returns a dict of results."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tf_sharpness as tfs  # pylint: disable=g-import-not-at-top
  from tf_sharpness import losses  # pylint: disable=g-import-not-at-top
  from tf_sharpness.curvature import vectors  # pylint: disable=g-import-not-at-top
  x, y, source = images(args.examples)
  model = build(model_name)
  # BatchNorm (ResNet50) in training mode: batch statistics, moving ones untouched.
  op = tfs.HessianOperator(model, losses.mean_loss("xent"), (x, y), training=True,
                           batch_size=args.examples)
  rss_model = peak_rss_gib()
  v = vectors.from_numpy(np.random.default_rng(1).standard_normal(op.dim), op.shapes,
                         op.dtype)
  op.matvec(v)  # trace
  t = time.perf_counter()
  op.matvec(v)
  hvp = time.perf_counter() - t
  progress = tfs.LogProgress(prefix=f"{model_name} ({basis_dtype} basis): ", seconds=30,
                             emit=lambda s: print(s, flush=True))
  t = time.perf_counter()
  res = tfs.top_eigenpairs(op, k=args.k, tol=args.tol, seed=0, basis_dtype=basis_dtype,
                           progress=progress)
  wall = time.perf_counter() - t
  out = {"model": model_name, "parameters": op.dim, "basis_dtype": basis_dtype,
         "examples": args.examples, "data": source, "eigenvalues": res.eigenvalues.tolist(),
         "ritz_residuals": res.residual_norms.tolist(), "hvps": res.num_matvecs,
         "converged": res.converged, "seconds": wall, "hvp_seconds": hvp,
         "peak_rss_gib_before_lanczos": rss_model}
  if args.true_residuals:  # ||H v - lambda v|| of the returned vectors, by HVPs
    apply = tfs.curvature.linear_operator.flat_matvec(op)
    flat = res.flat_eigenvectors()
    out["true_residuals"] = [float(np.linalg.norm(apply(u) - lam * u))
                             for u, lam in zip(flat, res.eigenvalues)]
  out["peak_rss_gib"] = peak_rss_gib()
  return out


def child(args, model_name, basis_dtype):
  cmd = [sys.executable, __file__, f"--child={model_name}:{basis_dtype}",
         f"--examples={args.examples}", f"--k={args.k}", f"--tol={args.tol}"]
  if model_name != "resnet50":
    cmd.append("--true_residuals")
  proc = subprocess.run(cmd, capture_output=True, text=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  for line in proc.stdout.splitlines():
    if line.startswith("{"):
      return json.loads(line)
    print("  " + line, flush=True)
  raise RuntimeError(f"{model_name} ({basis_dtype}) failed:\n{proc.stderr[-3000:]}")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--examples", type=int, default=64)
  p.add_argument("--k", type=int, default=5)
  p.add_argument("--tol", type=float, default=1e-3)
  p.add_argument("--skip_large", action="store_true")
  p.add_argument("--true_residuals", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    model_name, basis_dtype = args.child.split(":")
    print(json.dumps(measure(args, model_name, basis_dtype)), flush=True)
    return
  from machine import print_machine  # pylint: disable=g-import-not-at-top
  print_machine()
  rows = []
  if not args.skip_large:
    r = child(args, "resnet50", "float32")
    rows.append(r)
    print(f"ResNet50 ({r['parameters']:,} parameters), {r['examples']} images: top-{args.k}"
          f" {[round(v, 4) for v in r['eigenvalues']]} in {r['hvps']} HVPs, "
          f"{r['seconds']:.0f} s (one HVP {r['hvp_seconds']:.2f} s), converged="
          f"{r['converged']}; peak memory {r['peak_rss_gib']:.2f} GiB (model and data "
          f"{r['peak_rss_gib_before_lanczos']:.2f} GiB); the float32 basis of "
          f"{r['hvps']} vectors is {r['hvps'] * r['parameters'] * 4 / 2**30:.2f} GiB, in "
          f"float64 it would be {r['hvps'] * r['parameters'] * 8 / 2**30:.2f} GiB",
          flush=True)
  a, b = (child(args, "simple_cnn", d) for d in ("float32", "float64"))
  import numpy as np  # pylint: disable=g-import-not-at-top
  rel = np.max(np.abs(np.array(a["eigenvalues"]) - b["eigenvalues"]) /
               np.abs(b["eigenvalues"]))
  for r in (a, b):
    print(f"SimpleCNN F=100 ({r['parameters']:,} parameters), {r['basis_dtype']} basis: "
          f"top-{args.k} {[round(v, 5) for v in r['eigenvalues']]}, {r['hvps']} HVPs, "
          f"{r['seconds']:.0f} s, max true residual / lambda_max "
          f"{max(r['true_residuals']) / abs(r['eigenvalues'][0]):.1e}, peak memory "
          f"{r['peak_rss_gib']:.2f} GiB", flush=True)
  print(f"float32 vs float64 basis: max relative eigenvalue difference {rel:.1e}, HVPs "
        f"{a['hvps']} vs {b['hvps']}")


if __name__ == "__main__":
  main()
