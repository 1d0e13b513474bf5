"""Measures small float64 models on the Keras backend this process runs.

    KERAS_BACKEND=jax JAX_ENABLE_X64=1 python tests/backend_worker.py OUT.json WEIGHTS.npz

Builds each model of ``MODELS`` (seeded), loads its weights from
WEIGHTS.npz if the file exists (else writes them there), and records for
each: the top-3 eigenvalues, Hutchinson's trace (seeded probes), worst- and
average-case sharpness, H v on two random vectors, the relative error of H v
against the dense Hessian built from central differences of this backend's
own exact gradients along them (and, on TensorFlow, the top-3 of the dense
Hessian built from them), and the operator's self-check; and the weights after
a few steps of ``fit`` with SAM, ASAM and NSGD from the same start.  ``test_backends.py``
runs it on TensorFlow, JAX and PyTorch and compares.

    KERAS_BACKEND=torch python tests/backend_worker.py --audit OUT.json

runs every case of ``layer_audit`` (Keras' layers, activations and losses)
on this backend against differences of its own gradients.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

keras.config.set_floatx("float64")
keras.config.set_dtype_policy("float64")

import tf_sharpness as tfs  # noqa: E402
from tf_sharpness import sharpness as S  # noqa: E402

L = keras.layers
N = 24


def _dense(rng):
  x = rng.normal(size=(N, 6))
  return keras.Sequential([keras.Input((6,)), L.Dense(8, activation="tanh"), L.Dense(3)]), x


def _norm(make, training=False):
  def build(rng):
    x = rng.normal(size=(N, 6))
    return keras.Sequential([keras.Input((6,)), L.Dense(8), make(), L.Activation("tanh"),
                             L.Dense(3)]), x
  return build


def _conv(rng):
  x = rng.normal(size=(N, 6, 6, 2))
  return keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 3, activation="softplus"),
                           L.AveragePooling2D(2), L.Flatten(), L.Dense(3)]), x


def _attention(rng):
  x = rng.integers(0, 10, (N, 5)).astype("int32")
  inp = keras.Input((5,), dtype="int32")
  h = L.Embedding(10, 4)(inp)
  h = L.LayerNormalization()(h + L.MultiHeadAttention(2, 2)(h, h))
  return keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling1D()(h))), x


def _lstm(rng):
  x = rng.normal(size=(N, 4, 3))
  return keras.Sequential([keras.Input((4, 3)), L.LSTM(3), L.Dense(3)]), x


MODELS = {  # name: (build, training)
    "dense": (_dense, False),
    "layernorm": (_norm(L.LayerNormalization), False),
    "groupnorm": (_norm(lambda: L.GroupNormalization(groups=2)), False),
    "batchnorm_batch": (_norm(L.BatchNormalization), True),
    "conv": (_conv, False),
    "attention": (_attention, False),
    "lstm": (_lstm, False),
}


def shared_weights(model, prefix: str, weights: dict) -> None:
  """Loads ``model``'s weights from ``weights`` (saved by the first backend
  that ran), or records them there."""
  key = lambda i: f"{prefix}/{i}"
  if key(0) in weights:
    model.set_weights([weights[key(i)] for i in range(len(model.weights))])
  else:
    weights.update({key(i): np.asarray(keras.ops.convert_to_numpy(w))
                    for i, w in enumerate(model.weights)})


def fd_hessian(op, step=1e-5) -> np.ndarray:
  """Dense Hessian from central differences of the operator's gradients
  (Richardson's extrapolation of steps h and 2h)."""
  theta = op.parameters()
  split = lambda t: tfs.curvature.vectors.split_numpy(t, op.shapes)
  flat = lambda g: np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in g])
  grad = lambda t: flat(op.loss_and_gradient_at(split(t))[1])
  cols = []
  for i in range(theta.size):
    h = step * max(1.0, abs(theta[i]))
    e = np.zeros_like(theta)
    e[i] = h
    d1 = (grad(theta + e) - grad(theta - e)) / (2 * h)
    d2 = (grad(theta + 2 * e) - grad(theta - 2 * e)) / (4 * h)
    cols.append((4 * d1 - d2) / 3)
  hess = np.stack(cols, axis=1)
  return 0.5 * (hess + hess.T)


def fd_product(op, v, step=1e-5) -> np.ndarray:
  """H v from central differences of the operator's gradients along v
  (Richardson's extrapolation of steps h and 2h): four gradients."""
  theta = op.parameters()
  split = lambda t: tfs.curvature.vectors.split_numpy(t, op.shapes)
  flat = lambda g: np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in g])
  grad = lambda t: flat(op.loss_and_gradient_at(split(t))[1])
  norm = np.linalg.norm(v)
  u, h = v / norm, step * max(1.0, np.max(np.abs(theta)))
  d1 = (grad(theta + h * u) - grad(theta - h * u)) / (2 * h)
  d2 = (grad(theta + 2 * h * u) - grad(theta - 2 * h * u)) / (4 * h)
  return norm * (4 * d1 - d2) / 3


def _case(name: str, weights: dict):
  """(model, x, y, training, loss) of MODELS[name] with the shared weights."""
  build, training = MODELS[name]
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  model, x = build(rng)
  y = rng.integers(0, 3, N)
  shared_weights(model, name, weights)
  return model, x, y, training, keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def measure(name: str, weights: dict) -> dict:
  model, x, y, training, loss = _case(name, weights)
  op = tfs.HessianOperator(model, loss, (x, y), training=training, batch_size=10)
  top = tfs.top_eigenpairs(op, k=3, tol=1e-10, seed=0)
  trace = tfs.hessian_trace(op, num_samples=10, seed=0)
  vrng = np.random.default_rng(1)
  vs = [vrng.normal(size=op.dim) for _ in range(2)]
  hvs = [tfs.curvature.vectors.to_numpy(
      op.matvec(tfs.curvature.vectors.split_numpy(v, op.shapes))) for v in vs]
  err = max(np.linalg.norm(hv - fd_product(op, v)) / np.linalg.norm(hv)
            for v, hv in zip(vs, hvs))
  # The dense reference (4 gradients per parameter) on TensorFlow, whose
  # gradients are traced; the other backends' top-3 must equal TensorFlow's.
  exact_top = (np.linalg.eigvalsh(fd_hessian(op))[::-1][:3].tolist()
               if keras.backend.backend() == "tensorflow" else None)
  worst = S.worst_case_sharpness(rho=0.05, steps=10, evaluator=op)
  average = S.average_case_sharpness(sigma=0.01, samples=8, seed=0, evaluator=op)
  definition = op.hessian_definition()
  return {"top": top.eigenvalues.tolist(), "trace": float(trace.estimate),
          "hv": [h.tolist() for h in hvs], "fd_error": float(err),
          "exact_top": exact_top,
          "worst_case": worst.value, "average_case": average.value,
          "loss": op.loss(), "method": definition["hvp_method"],
          "fd_check": definition["fd_check"]}


def output_curvature(name: str, weights: dict) -> dict:
  """The GGN and the empirical Fisher of a softmax cross-entropy model,
  G v and F v on a random v, against references with no autodiff in them:
  J_n by central differences of the outputs (the model's forward pass at
  theta +- h e_i), G = mean_n J_n^T (diag p_n - p_n p_n^T) J_n and
  F = mean_n g_n g_n^T with g_n = J_n^T (p_n - e_{y_n}); and their top-2."""
  model, x, y, training, loss = _case(name, weights)
  per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
  ggn = tfs.GaussNewtonOperator(model, loss, (x, y), batch_size=10)
  fisher = tfs.FisherOperator(model, per_example, (x, y), batch_size=10)
  theta = ggn.parameters()
  split = lambda t: tfs.curvature.vectors.split_numpy(t, ggn.shapes)
  start = [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.trainable_weights]

  from tf_sharpness.curvature.backend_operator import float64_promotion

  def outputs(t):  # in float64 on every backend (Keras would demote it on JAX/torch)
    for var, value in zip(model.trainable_weights, split(t)):
      var.assign(value)
    with float64_promotion():
      z = model(x, training=training)
    return np.asarray(keras.ops.convert_to_numpy(z), np.float64)

  h = 1e-6
  jac = np.stack([(outputs(theta + h * e) - outputs(theta - h * e)) / (2 * h)
                  for e in np.eye(ggn.dim)], axis=-1)  # (N, classes, dim)
  z = outputs(theta)
  for var, value in zip(model.trainable_weights, start):
    var.assign(value)
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  hz = np.einsum("nc,cd->ncd", p, np.eye(3)) - np.einsum("nc,nd->ncd", p, p)
  g_ref = np.einsum("nci,ncd,ndj->ij", jac, hz, jac) / N
  per_grad = np.einsum("nci,nc->ni", jac, p - np.eye(3)[y])
  f_ref = per_grad.T @ per_grad / N
  v = np.random.default_rng(2).normal(size=ggn.dim)
  flat = lambda op: tfs.curvature.vectors.to_numpy(op.matvec(split(v)))
  gv, fv = flat(ggn), flat(fisher)
  rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
  return {"gv": gv.tolist(), "fv": fv.tolist(),
          "ggn_error": rel(gv, g_ref @ v), "fisher_error": rel(fv, f_ref @ v),
          "ggn_top": tfs.top_eigenpairs(ggn, k=2, tol=1e-10).eigenvalues.tolist(),
          "ggn_exact_top": np.linalg.eigvalsh(g_ref)[::-1][:2].tolist(),
          "fisher_top": tfs.top_eigenpairs(fisher, k=2, tol=1e-10).eigenvalues.tolist(),
          "fisher_exact_top": np.linalg.eigvalsh(f_ref)[::-1][:2].tolist(),
          "curvature": [ggn.hessian_definition().get("curvature"),
                        fisher.hessian_definition().get("curvature")]}


def trained(kind: str, weights: dict) -> list:
  """Weights after 4 full-batch-of-12 steps of ``fit`` with SAM, ASAM or
  NSGD (fixed directions, momentum) from the same start (float64)."""
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(N, 6)), rng.integers(0, 3, N)
  model = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="tanh"),
                            L.BatchNormalization(), L.Dense(3)])
  shared_weights(model, "train", weights)
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  if kind in ("sam", "asam"):
    wrapped = tfs.SAM(model, rho=0.05 if kind == "sam" else 0.5, adaptive=kind == "asam")
    wrapped.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss)
    wrapped.fit(x, y, batch_size=12, epochs=2, verbose=0, shuffle=False)
  else:
    opt = tfs.NSGD(learning_rate=0.1, gamma=0.1, top_k=2, momentum=0.9)
    model.compile(optimizer=opt, loss=loss)
    opt.build(model.trainable_variables)
    drng = np.random.default_rng(4)
    opt.set_directions([[drng.normal(size=v.shape) for v in model.trainable_variables]
                        for _ in range(2)])
    model.fit(x, y, batch_size=12, epochs=2, verbose=0, shuffle=False)
  return np.concatenate([np.ravel(keras.ops.convert_to_numpy(w)) for w in model.weights]).tolist()


def audit(out: str):
  """Every case of ``layer_audit`` on this backend: H v on two random vectors
  against differences of this backend's gradients along them."""
  from layer_audit import CASES
  rows = {}
  for name, case in CASES.items():
    keras.utils.set_random_seed(0)
    model, x, y, loss, training = case.build(np.random.default_rng(0))
    op = tfs.HessianOperator(model, loss, (x, y), training=training)
    rng = np.random.default_rng(1)
    err = 0.0
    for _ in range(2):
      v = rng.normal(size=op.dim)
      hv = tfs.curvature.vectors.to_numpy(
          op.matvec(tfs.curvature.vectors.split_numpy(v, op.shapes)))
      exact = fd_product(op, v)
      err = max(err, np.linalg.norm(hv - exact) / max(np.linalg.norm(exact), 1e-12))
    rows[name] = {"error": float(err), "method": op.method,
                  "fd_check": op.hessian_definition()["fd_check"]}
    print(f"{keras.backend.backend()} {name}: {err:.1e} ({op.method})", flush=True)
  with open(out, "w") as f:
    json.dump(rows, f)


def main(out: str, weights_path: str, names=None):
  weights = dict(np.load(weights_path)) if os.path.exists(weights_path) else {}
  results = {"backend": keras.backend.backend(),
             "trained": {kind: trained(kind, weights) for kind in ("sam", "asam", "nsgd")},
             "output_curvature": {name: output_curvature(name, weights)
                                  for name in ("dense", "conv")}}
  for name in names or MODELS:
    results[name] = measure(name, weights)
    print(f"{results['backend']} {name}: top {results[name]['top']}, "
          f"H v vs differences {results[name]['fd_error']:.1e}", flush=True)
  if not os.path.exists(weights_path):
    np.savez(weights_path, **weights)
  with open(out, "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
  if sys.argv[1] == "--audit":
    audit(sys.argv[2])
  else:
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(",") if len(sys.argv) > 3 else None)
