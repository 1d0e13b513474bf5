#!/usr/bin/env python3
"""tf-sharpness against PyHessian and hessian-eigenthings, on the same networks.

The same MLP and CNN are built in Keras and in PyTorch with the same weights
(copied from Keras, checked by comparing loss and gradient), on the same batch
of real CIFAR-10 images (cross-entropy, mean over the batch).  After a short
SGD warm-up so that the Hessian is a mid-training one, the script reports

(a) agreement: the top-5 eigenvalues from each tool at tight settings, as the
    largest relative difference from a float64 reference (hessian-eigenthings'
    Lanczos with full reorthogonalization on a float64 copy of the network,
    200 steps, Ritz residuals printed);
(b) cost at equal accuracy: for each tool, a ladder of its own accuracy
    setting (our residual tolerance, PyHessian's and hessian-eigenthings'
    power-iteration tolerance, hessian-eigenthings' Lanczos step count) is run
    and the cheapest setting whose top-5 are all within --accuracy (relative)
    of the reference is kept; its wall time and HVP count are printed, with
    ratios to ours, all measured in this one run.  Our operator runs on each
    Keras backend of --backends: TensorFlow in this process, JAX and PyTorch
    each in a child process (KERAS_BACKEND is read when Keras is imported)
    given the same warmed-up weights and images; the children run one after
    the other while this process waits, so no two tools share the CPU.

Timing covers one top-5 measurement, including PyHessian's construction (a
forward and backward pass it needs per measurement) and excluding our one-time
tf.function tracing (done once per training run; printed separately).

Optional extra, not a dependency of the package:

    pip install torch==2.13.0 pyhessian hessian-eigenthings  # or: -e ".[compare]"
    python benchmarks/vs_pytorch.py [--dataset=PATH] [--examples=512] \
        [--backends=tensorflow,jax,torch]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

try:
  import torch  # noqa: E402
  from torch import nn  # noqa: E402
  import hessian_eigenthings as he  # noqa: E402
  import importlib  # noqa: E402
  import pyhessian  # noqa: E402
  pyhessian_hessian = importlib.import_module("pyhessian.hessian")
except ImportError as e:
  sys.exit(f"{e}: this benchmark needs the optional extra: "
           "pip install torch==2.13.0 pyhessian hessian-eigenthings")

import tf_sharpness as tfs  # noqa: E402
from machine import default_dataset, print_machine  # noqa: E402  (benchmarks/ is on the path)
from tf_sharpness import data, losses  # noqa: E402

K = 5


# ----------------------------------------------------------------------------
# The same networks in Keras and PyTorch.

def keras_model(kind, input_shape):
  layers = [keras.Input(input_shape)]
  if kind == "mlp":
    layers += [keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"),
               keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)]
  else:
    layers += [keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
               keras.layers.MaxPooling2D(2),
               keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
               keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
               keras.layers.Dense(10)]
  return keras.Sequential(layers, name=kind)


class NHWCFlatten(nn.Module):
  """Flattens NCHW activations in Keras' NHWC order."""

  def forward(self, x):
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1) if x.dim() == 4 else x


def torch_model(kind, keras_net):
  """A PyTorch copy of ``keras_net`` (NCHW inputs) with its weights."""
  if kind == "mlp":
    net = nn.Sequential(NHWCFlatten(), nn.Linear(3072, 128), nn.ReLU(),
                        nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
  else:
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        NHWCFlatten(), nn.Linear(4096, 10))
  weighted = [m for m in net if isinstance(m, (nn.Linear, nn.Conv2d))]
  keras_layers = [l for l in keras_net.layers if l.weights]
  with torch.no_grad():
    for tm, kl in zip(weighted, keras_layers, strict=True):
      kernel, bias = (np.asarray(w) for w in kl.get_weights())
      kernel = kernel.T if kernel.ndim == 2 else kernel.transpose(3, 2, 0, 1)
      tm.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
      tm.bias.copy_(torch.from_numpy(bias))
  return net


# ----------------------------------------------------------------------------
# One top-5 measurement per tool: (eigenvalues sorted descending, HVPs).

def ours(op, tol):
  res = tfs.top_eigenpairs(op, k=K, tol=tol)
  return np.sort(res.eigenvalues)[::-1], res.num_matvecs


def pyhessian_top5(net, x, y, tol, max_iter=1000):
  calls = [0]
  original = pyhessian_hessian.hessian_vector_product

  def counted(*args):
    calls[0] += 1
    return original(*args)

  pyhessian_hessian.hessian_vector_product = counted
  try:
    net.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    comp = pyhessian.hessian(net, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    vals, _ = comp.eigenvalues(maxIter=max_iter, tol=tol, top_n=K)
  finally:
    pyhessian_hessian.hessian_vector_product = original
    net.zero_grad(set_to_none=True)
  return np.sort(np.asarray(vals))[::-1], calls[0]


class CountingOperator(he.CurvatureOperator):
  def __init__(self, op):
    self.op, self.calls = op, 0

  size = property(lambda self: self.op.size)
  device = property(lambda self: self.op.device)
  dtype = property(lambda self: self.op.dtype)

  def matvec(self, v):
    self.calls += 1
    return self.op.matvec(v)


def eigenthings_op(net, x, y):
  return he.HessianOperator(net, [(x, y)], he.supervised_loss(nn.CrossEntropyLoss()))


def eigenthings_lanczos(net, x, y, steps):
  op = CountingOperator(eigenthings_op(net, x, y))
  res = he.lanczos(op, k=K, max_iter=steps, which="LA", seed=0, reorthogonalize=True)
  return np.sort(res.eigenvalues.double().numpy())[::-1], op.calls


def eigenthings_power(net, x, y, tol, max_iter=1000):
  op = CountingOperator(eigenthings_op(net, x, y))
  res = he.deflated_power_iteration(op, k=K, max_iter=max_iter, tol=tol, seed=0)
  return np.sort(res.eigenvalues.double().numpy())[::-1], op.calls


# ----------------------------------------------------------------------------

def timed(fn):
  t = time.perf_counter()
  vals, hvps = fn()
  return vals, hvps, time.perf_counter() - t


def rel_err(vals, ref):
  return float(np.max(np.abs(np.asarray(vals) - ref) / np.abs(ref)))


OUR_TOLS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4)


def backend_worker(path):
  """In a child process under another KERAS_BACKEND: the Keras network of
  ``path`` (kind, weights, images) measured with our ladder; prints one JSON
  line: tracing seconds, each rung's (tol, eigenvalues, HVPs, seconds), the
  tight run and the loss (to check it is the same function)."""
  saved = np.load(path)
  kind = str(saved["kind"])
  x, y = saved["x"], saved["y"]
  knet = keras_model(kind, x.shape[1:])
  knet.set_weights([saved[f"w{i}"] for i in range(int(saved["n_weights"]))])
  op = tfs.HessianOperator(knet, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           (x, y), batch_size=len(x))
  t = time.perf_counter()
  ours(op, 1e-1)
  tracing = time.perf_counter() - t
  rungs = []
  for tol in OUR_TOLS:
    vals, hvps, wall = timed(lambda tol=tol: ours(op, tol))
    rungs.append({"tol": tol, "eigenvalues": vals.tolist(), "hvps": hvps, "seconds": wall})
  tight, tight_hvps, _ = timed(lambda: ours(op, 1e-5))
  print(json.dumps({"backend": keras.backend.backend(), "method": op.method,
                    "loss": float(op.loss_and_gradient()[0]), "tracing": tracing,
                    "rungs": rungs, "tight": tight.tolist(), "tight_hvps": tight_hvps}))


def on_backend(backend, kind, knet, x, y):
  """``backend_worker`` on ``backend`` in a child process (None if it failed)."""
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "case.npz")
    weights = knet.get_weights()
    np.savez(path, kind=kind, x=x, y=y, n_weights=len(weights),
             **{f"w{i}": w for i, w in enumerate(weights)})
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", path],
                          capture_output=True, text=True, env=env, check=False)
  if proc.returncode:
    print(f"{backend}: failed\n{proc.stderr[-2000:]}")
    return None
  return json.loads(proc.stdout.strip().splitlines()[-1])


BACKEND_NAMES = {"jax": "JAX", "torch": "PyTorch"}


def paired_networks(kind, ds, args):
  """The Keras network after its SGD warm-up, its PyTorch copy, the batch in
  both layouts and our Hessian operator on it."""
  keras.utils.set_random_seed(0)
  x, y = ds.train_x[:args.examples], ds.train_y[:args.examples]
  knet = keras_model(kind, ds.input_shape)
  knet.compile(optimizer=keras.optimizers.SGD(args.warmup_lr),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  knet.fit(x, y, batch_size=128, epochs=args.warmup_epochs, verbose=0, shuffle=False)
  tnet = torch_model(kind, knet)
  tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  ty = torch.from_numpy(y.astype(np.int64))
  op = tfs.HessianOperator(knet, losses.mean_loss("xent"), (x, y),
                           batch_size=args.examples)
  return knet, tnet, (x, y), (tx, ty), op


def check_same_function(op, tnet, tx, ty):
  """Prints how far the two copies' loss and gradient are apart; returns
  our loss."""
  k_loss, k_grad = op.loss_and_gradient()
  k_grad = tfs.flatten(k_grad).numpy()
  tnet.zero_grad(set_to_none=True)
  t_loss = nn.CrossEntropyLoss()(tnet(tx), ty)
  t_loss.backward()
  t_grad = np.concatenate([
      (p.grad.numpy().T if p.grad.dim() == 2 else
       p.grad.numpy().transpose(2, 3, 1, 0) if p.grad.dim() == 4 else p.grad.numpy()
       ).reshape(-1) for p in tnet.parameters()])
  tnet.zero_grad(set_to_none=True)
  print(f"same function: |loss_keras - loss_torch| = {abs(float(k_loss) - t_loss.item()):.2e}, "
        f"gradient relative difference {np.linalg.norm(k_grad - t_grad) / np.linalg.norm(k_grad):.2e}")
  return float(k_loss)


def reference_top(kind, knet, tx, ty, n):
  """The reference top-K: hessian-eigenthings' Lanczos on a float64 copy,
  200 steps with full reorthogonalization (Ritz residuals printed)."""
  net64 = torch_model(kind, knet).double()
  ref_op = eigenthings_op(net64, tx.double(), ty)
  ref = he.lanczos(ref_op, k=K, max_iter=min(200, n - 1), which="LA", seed=1,
                   reorthogonalize=True)
  ref_vals = np.sort(ref.eigenvalues.numpy())[::-1]
  residuals = [float(torch.linalg.norm(ref_op.matvec(v) - lam * v)) / abs(ref_vals[0])
               for lam, v in zip(ref.eigenvalues, ref.eigenvectors)]
  print("reference top-5 (float64):", np.round(ref_vals, 5).tolist(),
        "residuals ||Hv - lambda v|| / lambda_max:", [f"{r:.1e}" for r in residuals])
  return ref_vals


def climb_ladders(ladders, ref_vals, accuracy, best, tightest):
  """Runs each tool's ladder of settings, from cheap to dear, up to the first
  one whose top-K are all within ``accuracy`` of the reference (kept in
  ``best`` as (setting, HVPs, wall s, error)); ``tightest`` keeps each tool's
  last values."""
  for tool, ladder in ladders.items():
    print(f"-- {tool}")
    for setting, fn in ladder:
      vals, hvps, wall = timed(fn)
      err = rel_err(vals, ref_vals)
      tightest[tool] = vals
      print(f"   {setting:g}: {hvps:4d} HVPs, {wall:7.2f} s, max relative error "
            f"{err:.1e}  {np.round(vals, 4).tolist()}", flush=True)
      if err <= accuracy:
        best[tool] = (setting, hvps, wall, err)
        break


def ours_on_backends(backends, kind, knet, data_xy, k_loss, ref_vals, accuracy, best,
                     tightest):
  """Our Lanczos on the other Keras backends (child processes), its rungs
  scored against the same reference."""
  for backend in backends:
    if backend == "tensorflow":
      continue
    tool = f"tf-sharpness Lanczos on {BACKEND_NAMES.get(backend, backend)} (tol)"
    res = on_backend(backend, kind, knet, *data_xy)
    if res is None:
      continue
    print(f"-- {tool}: method {res['method']}, |loss - TensorFlow's| = "
          f"{abs(res['loss'] - k_loss):.2e}, one-time tracing + first measurement "
          f"{res['tracing']:.2f} s")
    for rung in res["rungs"]:
      vals = np.asarray(rung["eigenvalues"])
      err = rel_err(vals, ref_vals)
      print(f"   {rung['tol']:g}: {rung['hvps']:4d} HVPs, {rung['seconds']:7.2f} s, max "
            f"relative error {err:.1e}  {np.round(vals, 4).tolist()}", flush=True)
      if err <= accuracy and tool not in best:
        best[tool] = (rung["tol"], rung["hvps"], rung["seconds"], err)
    tightest[tool] = np.asarray(res["tight"])
    print(f"tight {tool}: {res['tight_hvps']} HVPs, max relative error "
          f"{rel_err(tightest[tool], ref_vals):.1e}")


def print_agreement(tightest, ref_vals):
  print("agreement: max_i |lambda_i(A) - lambda_i(B)| / |lambda_i(reference)| "
        "between the tightest runs (power iterations: the last rung run)")
  names = list(tightest)
  for a in names:
    print(f"   {a:45s}", " ".join(
        f"{np.max(np.abs(tightest[a] - tightest[b]) / np.abs(ref_vals)):.1e}"
        for b in names))


def compare(kind, ds, args):
  """One network: agreement with the reference and the cheapest accurate
  setting of each tool; returns {tool: (setting, HVPs, wall s, error)}."""
  knet, tnet, data_xy, (tx, ty), op = paired_networks(kind, ds, args)
  print(f"\n== {kind}: {op.dim:,} parameters, {args.examples} CIFAR-10 images, "
        f"{args.warmup_epochs} warm-up epochs of SGD (lr {args.warmup_lr})")
  k_loss = check_same_function(op, tnet, tx, ty)
  ref_vals = reference_top(kind, knet, tx, ty, op.dim)

  t = time.perf_counter()
  ours(op, 1e-1)  # traces the HVP graph once
  print(f"our one-time tracing + first measurement: {time.perf_counter() - t:.2f} s")

  ladders = {
      "tf-sharpness Lanczos (tol)": [(tol, lambda tol=tol: ours(op, tol))
                                     for tol in OUR_TOLS],
      "PyHessian power iteration (tol)": [
          (tol, lambda tol=tol: pyhessian_top5(tnet, tx, ty, tol))
          for tol in (1e-2, 1e-3, 1e-4, 1e-5)],
      "hessian-eigenthings Lanczos (steps)": [
          (s, lambda s=s: eigenthings_lanczos(tnet, tx, ty, s))
          for s in (10, 15, 20, 23, 26, 30, 35, 40, 50, 60, 80)],
      "hessian-eigenthings power iteration (tol)": [
          (tol, lambda tol=tol: eigenthings_power(tnet, tx, ty, tol))
          for tol in (1e-2, 1e-3, 1e-4)],
  }
  best, tightest = {}, {}
  climb_ladders(ladders, ref_vals, args.accuracy, best, tightest)
  # Agreement at tight settings of the two Lanczos codes (cheap).
  for tool, fn in (("tf-sharpness Lanczos (tol)", lambda: ours(op, 1e-5)),
                   ("hessian-eigenthings Lanczos (steps)",
                    lambda: eigenthings_lanczos(tnet, tx, ty, 80))):
    tightest[tool], hvps, _ = timed(fn)
    print(f"tight {tool}: {hvps} HVPs, max relative error "
          f"{rel_err(tightest[tool], ref_vals):.1e}")
  ours_on_backends(args.backends.split(","), kind, knet, data_xy, k_loss, ref_vals,
                   args.accuracy, best, tightest)
  print_agreement(tightest, ref_vals)
  return best


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default=default_dataset())
  p.add_argument("--examples", type=int, default=512)
  p.add_argument("--models", default="mlp,cnn")
  p.add_argument("--accuracy", type=float, default=1e-3)
  p.add_argument("--warmup_epochs", type=int, default=10)
  p.add_argument("--warmup_lr", type=float, default=0.05)
  p.add_argument("--backends", default="tensorflow,jax,torch",
                 help="Keras backends our operator runs on (JAX and PyTorch in child "
                 "processes; each needs its extra: pip install -e '.[jax,torch]').")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    backend_worker(args.worker)
    return
  print_machine()
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, torch "
        f"{torch.__version__}, hessian-eigenthings {he.__version__}, PyHessian "
        f"(PyPI 0.1); {os.cpu_count()} CPU threads, torch threads "
        f"{torch.get_num_threads()}")
  ds = data.prepare(data.load(args.dataset), train_size=args.examples, seed=0)
  for kind in args.models.split(","):
    best = compare(kind, ds, args)
    print(f"\n{kind}: cheapest setting reaching relative accuracy {args.accuracy:g} "
          "on all top-5")
    mine = best.get("tf-sharpness Lanczos (tol)")
    print("| tool | setting | HVPs | wall s | max rel. error | wall / ours | HVPs / ours |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ours_on = [f"tf-sharpness Lanczos on {BACKEND_NAMES.get(b, b)} (tol)"
               for b in args.backends.split(",") if b != "tensorflow"]
    for tool in ("tf-sharpness Lanczos (tol)", *ours_on, "PyHessian power iteration (tol)",
                 "hessian-eigenthings Lanczos (steps)",
                 "hessian-eigenthings power iteration (tol)"):
      if tool not in best:
        print(f"| {tool} | none reached it | | | | | |")
        continue
      s, h, w, e = best[tool]
      ratio = (f"{w / mine[2]:.2f} | {h / mine[1]:.2f}" if mine else "— | —")
      print(f"| {tool} | {s:g} | {h} | {w:.2f} | {e:.1e} | {ratio} |")


if __name__ == "__main__":
  main()
