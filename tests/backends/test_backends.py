"""The same Keras model on TensorFlow, JAX and PyTorch: each backend's
HessianOperator against central differences of its own exact gradients
(along random vectors; on TensorFlow also the top-3 of the dense Hessian
built from them), and the three against each other on the same weights
(float64): top-3, Hutchinson's trace, worst- and average-case sharpness and
H v must agree to 1e-6 relative, and SAM, ASAM and NSGD in ``fit`` must
move the same weights the same way (TensorFlow's against their numpy rules
in test_sam.py and test_nsgd.py).  Each backend runs in its own process
(``backend_worker.py``; KERAS_BACKEND is read when Keras is imported)."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

HERE = os.path.join(REPO, "tests")  # the helpers beside conftest.py
BACKENDS = ("tensorflow", "jax", "torch")


def _installed(backend):
  return backend == "tensorflow" or importlib.util.find_spec(backend) is not None


def _run(backend, out, weights):
  env = dict(os.environ, KERAS_BACKEND=backend, JAX_ENABLE_X64="1",
             TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, os.path.join(HERE, "backend_worker.py"),
                         out, weights], capture_output=True, text=True, timeout=900,
                        env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  missing = [b for b in BACKENDS if not _installed(b)]
  if missing:
    pytest.skip(f"not installed: {missing} (pip install -e '.[jax,torch]')")
  folder = tmp_path_factory.mktemp("backends")
  weights = str(folder / "weights.npz")
  return {b: _run(b, str(folder / f"{b}.json"), weights) for b in BACKENDS}


def test_each_backend_matches_differences_of_its_own_gradients(results):
  for backend, res in results.items():
    assert res["backend"] == backend
    for name, r in res.items():
      if name in ("backend", "trained", "output_curvature"):
        continue
      assert r["fd_error"] < 1e-6, (backend, name, r["fd_error"])
      if backend == "tensorflow":  # the others equal TensorFlow's (below)
        np.testing.assert_allclose(r["top"], r["exact_top"], rtol=1e-6,
                                   err_msg=f"{backend} {name}")
      assert r["fd_check"] == "agrees", (backend, name, r["fd_check"])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_same_weights_give_the_same_numbers_on_every_backend(results, backend):
  tf_res, other = results["tensorflow"], results[backend]
  # test_sam/test_nsgd check TensorFlow's against the numpy rules.  Keras runs
  # a float64 model's matmuls in float32 on JAX and PyTorch during fit (its
  # type promotion demotes 64-bit types there): ~5e-8 apart after 4 steps,
  # while one step of a wrong rule (SGD instead of SAM) moves them ~1e-3.
  for kind, ref in tf_res["trained"].items():
    np.testing.assert_allclose(other["trained"][kind], ref, rtol=1e-6, atol=1e-6,
                               err_msg=f"{backend}: weights after fit with {kind}")
  assert np.abs(np.subtract(tf_res["trained"]["sam"], tf_res["trained"]["asam"])).max() > 1e-4
  for name, ref in tf_res.items():
    if name in ("backend", "trained", "output_curvature"):
      continue
    got = other[name]
    for key in ("top", "trace", "worst_case", "average_case", "loss"):
      np.testing.assert_allclose(got[key], ref[key], rtol=1e-6,
                                 err_msg=f"{backend} {name} {key}")
    np.testing.assert_allclose(got["hv"], ref["hv"], rtol=1e-6, atol=1e-9,
                               err_msg=f"{backend} {name} H v")
  assert results["jax"]["lstm"]["method"] == "forward_over_reverse"  # jax scans are JVP-able
  assert results["torch"]["dense"]["method"] == "reverse_over_reverse"


def test_gauss_newton_and_fisher_on_every_backend(results):
  """GGN and empirical Fisher products and top-2 on each backend against
  references with no autodiff (Jacobians from central differences of the
  outputs, the softmax cross-entropy's output Hessian in closed form), and
  the three backends against each other."""
  tf_res = results["tensorflow"]["output_curvature"]
  for backend, res in results.items():
    for name, r in res["output_curvature"].items():
      assert r["ggn_error"] < 1e-7 and r["fisher_error"] < 1e-7, (backend, name, r)
      np.testing.assert_allclose(r["ggn_top"], r["ggn_exact_top"], rtol=1e-7)
      np.testing.assert_allclose(r["fisher_top"], r["fisher_exact_top"], rtol=1e-7)
      for key in ("gv", "fv", "ggn_top", "fisher_top"):
        np.testing.assert_allclose(r[key], tf_res[name][key], rtol=1e-10, atol=1e-12,
                                   err_msg=f"{backend} {name} {key}")
      if backend != "tensorflow":
        assert r["curvature"] == ["generalized Gauss-Newton", "empirical Fisher"]


README_BLOCKS = {"# tf-sharpness on JAX or PyTorch": "lambda_max: ",
                 "# tf-sharpness in model.fit": "lambda_max after each epoch",
                 "# tf-sharpness on your own model": "lambda_max: "}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_readme_examples_run_on_the_backend(tmp_path, backend):
  """The README's backend example, its model.fit example and its "Your own
  model" example, unchanged, under KERAS_BACKEND=jax and torch."""
  import re
  if not _installed(backend):
    pytest.skip(f"{backend} is not installed")
  text = open(os.path.join(os.path.dirname(HERE), "README.md")).read()
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.path.dirname(HERE))
  for mark, expected in README_BLOCKS.items():
    code = [b for b in blocks if b.startswith(mark)]
    assert len(code) == 1, mark
    proc = subprocess.run([sys.executable, "-c", code[0]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (mark, proc.stderr[-3000:])
    assert expected in proc.stdout, (mark, proc.stdout)
    if mark.startswith("# tf-sharpness on JAX"):
      assert proc.stdout.startswith(backend) and "self-check: agrees" in proc.stdout


DATA_PARALLEL = """
import jax, keras, numpy as np
import tf_sharpness as tfs
assert len(jax.devices()) == 2, jax.devices()
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 10)).astype("float32"); y = rng.integers(0, 3, 256)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="tanh"),
                          keras.layers.Dense(3)])
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
cb = tfs.SpectrumCallback(None, (x[:64], y[:64]), every=4, k=2, verbose=False)
model.fit(x, y, batch_size=32, epochs=1, callbacks=[cb], verbose=0)
assert "batch" in str(model.trainable_variables[0].value.sharding)
weights = [np.asarray(w) for w in model.get_weights()]
keras.distribution.set_distribution(None)
single = keras.models.clone_model(model)
single.set_weights(weights)
op = tfs.HessianOperator(single, loss, (x[:64], y[:64]))
print(cb.records[-1]["top_eigenvalues"], tfs.top_eigenpairs(op, k=2, tol=1e-8).eigenvalues.tolist())
"""


def test_jax_data_parallel_on_two_cpu_devices():
  """keras.distribution's DataParallel on 2 host devices: the callback
  measures the replicated model as one device measures the same weights."""
  if not _installed("jax"):
    pytest.skip("jax is not installed")
  env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  proc = subprocess.run([sys.executable, "-c", DATA_PARALLEL], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  measured, single = (np.array(json.loads(part)) for part in
                      proc.stdout.strip().splitlines()[-1].replace("] [", "]|[").split("|"))
  np.testing.assert_allclose(measured, single, rtol=1e-5)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_layer_family_is_exact_on_the_backend(tmp_path, backend):
  """layer_audit's Keras layers, activations and losses (48 cases) on the
  backend: H v against differences of that backend's own gradients."""
  if not _installed(backend):
    pytest.skip(f"{backend} is not installed")
  out = str(tmp_path / "audit.json")
  env = dict(os.environ, KERAS_BACKEND=backend, JAX_ENABLE_X64="1",
             TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, os.path.join(HERE, "backend_worker.py"),
                         "--audit", out], capture_output=True, text=True, timeout=900,
                        env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  from layer_audit import CASES
  with open(out) as f:
    rows = json.load(f)
  assert set(rows) == set(CASES)
  for name, row in rows.items():
    assert row["error"] < 1e-6, (backend, name, row)
    if row["method"] == "finite_difference":  # no second derivative there
      assert (backend, name) == ("torch", "hard_sigmoid"), (backend, name)
    else:
      assert row["fd_check"] == "agrees", (backend, name, row)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_directional_probe_in_fit_on_the_backend(backend):
  """The directional probe's update curvature and critical sharpness in
  ``fit`` on JAX and PyTorch against the quadratic's closed form
  (``directional_worker.py``)."""
  if not _installed(backend):
    pytest.skip(f"{backend} is not installed")
  env = dict(os.environ, KERAS_BACKEND=backend, JAX_ENABLE_X64="1", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, os.path.join(HERE, "directional_worker.py")],
                        capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert f"{backend} 4 " in proc.stdout  # steps 0, 2 and 4 were measured
