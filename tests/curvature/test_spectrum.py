"""The Hessian operator and spectral methods against ground truth."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sharpness as tfs
from tf_sharpness.curvature import vectors
from exact_hessian import exact_hessian, small_models

XENT = keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                   dtype="float64")


def _warm_bn(model, x):
  """Moves BatchNorm's moving statistics away from their (0, 1) init."""
  for _ in range(3):
    model(x, training=True)


@pytest.fixture(scope="module")
def models(tiny_cifar):
  x, _ = tiny_cifar
  ms = small_models(x.shape[1:])
  _warm_bn(ms["bn"], x)
  return ms


@pytest.mark.parametrize("name", ["mlp", "cnn", "bn"])
@pytest.mark.parametrize("method", tfs.curvature.hvp.METHODS)
def test_matvec_equals_exact_hessian(models, tiny_cifar, name, method):
  x, y = tiny_cifar
  model = models[name]
  hess = exact_hessian(model, XENT, x, y)
  op = tfs.HessianOperator(model, XENT, (x, y), method=method, batch_size=20)
  rng = np.random.default_rng(0)
  for _ in range(3):
    v = rng.standard_normal(op.dim)
    hv = vectors.to_numpy(op.matvec(vectors.from_numpy(v, op.shapes, op.dtype)))
    tol = 1e-6 if method == "finite_difference" else 1e-9  # O(h^2), h ~ 6e-6
    np.testing.assert_allclose(hv, hess @ v, rtol=tol, atol=tol * np.abs(hess @ v).max())
  assert op.hessian_definition()["hvp_method"] == method


@pytest.mark.parametrize("name", ["mlp", "cnn", "bn"])
def test_top_and_bottom_eigenvalues_match_eigh(models, tiny_cifar, name):
  x, y = tiny_cifar
  model = models[name]
  hess = exact_hessian(model, XENT, x, y)
  evals, evecs = np.linalg.eigh(hess)
  op = tfs.HessianOperator(model, XENT, (x, y), batch_size=32)
  top = tfs.top_eigenpairs(op, k=5, tol=1e-6, num_iters=400)
  assert top.converged
  np.testing.assert_allclose(top.eigenvalues, evals[::-1][:5], rtol=1e-4)
  gap = (evals[-1] - evals[-2]) / evals[-1]
  if gap > 1e-2:
    cos = abs(top.flat_eigenvectors()[0] @ evecs[:, -1])
    assert cos > 0.999
  # Reported residuals are the true ||Hv - lambda v||.
  v = top.flat_eigenvectors()
  true_res = np.linalg.norm(hess @ v.T - v.T * top.eigenvalues, axis=0)
  np.testing.assert_allclose(top.residual_norms, true_res,
                             atol=1e-6 * abs(evals).max())
  bottom = tfs.top_eigenpairs(op, k=2, which="smallest", tol=1e-6,
                              num_iters=op.dim)
  np.testing.assert_allclose(bottom.eigenvalues, evals[:2],
                             atol=1e-4 * abs(evals).max())


def test_float32_model_within_float32_tolerance(tiny_cifar):
  x, y = tiny_cifar
  m64 = small_models(x.shape[1:])["cnn"]
  m32 = small_models(x.shape[1:], dtype="float32")["cnn"]
  for a, b in zip(m32.weights, m64.weights):
    a.assign(b.numpy().astype(np.float32))
  evals = np.linalg.eigvalsh(exact_hessian(m64, XENT, x, y))[::-1]
  op = tfs.HessianOperator(m32, XENT, (x.astype(np.float32), y))
  top = tfs.top_eigenpairs(op, k=5, tol=1e-4, num_iters=300)
  np.testing.assert_allclose(top.eigenvalues, evals[:5], rtol=1e-3)


def test_training_mode_uses_batch_statistics_and_keeps_moving_ones(models, tiny_cifar):
  x, y = tiny_cifar
  model = models["bn"]
  before = [v.numpy().copy() for v in model.non_trainable_variables]
  hess = exact_hessian(model, XENT, x, y, training=True)
  op = tfs.HessianOperator(model, XENT, (x, y), training=True, batch_size=64)
  top = tfs.top_eigenpairs(op, k=3, tol=1e-6, num_iters=300)
  np.testing.assert_allclose(top.eigenvalues,
                             np.linalg.eigvalsh(hess)[::-1][:3], rtol=1e-4)
  hess_inference = exact_hessian(model, XENT, x, y, training=False)
  assert not np.allclose(hess, hess_inference, rtol=1e-3)
  for a, b in zip(before, model.non_trainable_variables):
    np.testing.assert_array_equal(a, b.numpy())


def test_methods_agree_and_batching_does_not_change_the_operator(models, tiny_cifar):
  x, y = tiny_cifar
  model = models["cnn"]
  rng = np.random.default_rng(3)
  v = vectors.from_numpy(rng.standard_normal(
      sum(int(np.prod(w.shape)) for w in model.trainable_variables)),
      [w.shape for w in model.trainable_variables], tf.float64)
  results = []
  for method in ("forward_over_reverse", "reverse_over_reverse"):
    for batch_size in (64, 7):
      op = tfs.HessianOperator(model, XENT, (x, y), method=method,
                               batch_size=batch_size)
      results.append(vectors.to_numpy(op.matvec(v)))
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(13)
  results.append(vectors.to_numpy(tfs.HessianOperator(model, XENT, ds).matvec(v)))
  for r in results[1:]:
    np.testing.assert_allclose(r, results[0], rtol=1e-9, atol=1e-12)


def test_loss_and_gradient_match_keras(models, tiny_cifar):
  x, y = tiny_cifar
  model = models["mlp"]
  op = tfs.HessianOperator(model, XENT, (x, y), batch_size=10)
  with tf.GradientTape() as tape:
    loss = XENT(y, model(x))
  grad = tape.gradient(loss, model.trainable_variables)
  assert op.loss() == pytest.approx(float(loss), rel=1e-10)
  np.testing.assert_allclose(vectors.to_numpy(op.gradient()),
                             vectors.to_numpy(grad), rtol=1e-8, atol=1e-12)


def test_no_retracing_between_calls(models, tiny_cifar):
  x, y = tiny_cifar
  op = tfs.HessianOperator(models["mlp"], XENT, (x, y), batch_size=32)
  v = [tf.ones(s, tf.float64) for s in op.shapes]
  for _ in range(4):
    op.matvec(v)
  # A redrawn subset of the same size (as --hessian_resample does) reuses it.
  op.set_data((x[::-1], y[::-1]))
  op.matvec(v)
  assert op._hvp_pass.experimental_get_tracing_count() == 1


def test_quadratic_with_known_spectrum():
  rng = np.random.default_rng(0)
  n = 120
  q, _ = np.linalg.qr(rng.standard_normal((n, n)))
  lam = np.concatenate([[9.0, 7.0, 5.0, 3.0, 2.5], rng.uniform(-1.0, 1.0, n - 7),
                        [-4.0, -6.0]])
  op = tfs.MatrixOperator((q * lam) @ q.T, shapes=[(4, 5), (100,)])
  top = tfs.top_eigenpairs(op, k=5, tol=1e-8)
  np.testing.assert_allclose(top.eigenvalues, [9, 7, 5, 3, 2.5], rtol=1e-8)
  assert [p.shape for p in top.eigenvectors[0]] == [(4, 5), (100,)]
  both = tfs.top_eigenpairs(op, k=4, which="both_ends", tol=1e-8)
  np.testing.assert_allclose(both.eigenvalues, [9, 7, -4, -6], rtol=1e-8)
  smallest = tfs.top_eigenpairs(op, k=2, which="smallest", tol=1e-8)
  np.testing.assert_allclose(smallest.eigenvalues, [-6, -4], rtol=1e-8)
  assert top.num_matvecs < n


def test_lanczos_breakdown_on_low_rank_operator():
  rng = np.random.default_rng(1)
  u, _ = np.linalg.qr(rng.standard_normal((50, 3)))
  op = tfs.MatrixOperator((u * [3.0, 2.0, 1.0]) @ u.T)
  res = tfs.lanczos(op, 20)
  assert len(res.alphas) <= 4  # invariant Krylov space found, no NaN
  assert np.all(np.isfinite(res.tridiagonal()))
  top = tfs.top_eigenpairs(op, k=5)
  np.testing.assert_allclose(top.eigenvalues, [3, 2, 1, 0, 0], atol=1e-10)
  basis = res.basis
  np.testing.assert_allclose(basis @ basis.T, np.eye(len(basis)), atol=1e-12)


def test_trace_and_density_against_exact(models, tiny_cifar):
  x, y = tiny_cifar
  model = models["cnn"]
  hess = exact_hessian(model, XENT, x, y)
  evals = np.linalg.eigvalsh(hess)
  op = tfs.HessianOperator(model, XENT, (x, y))
  tr = tfs.hessian_trace(op, num_samples=60, seed=2)
  assert abs(tr.estimate - np.trace(hess)) <= 3 * tr.stderr
  assert tr.stderr > 0
  dens = tfs.spectral_density(op, num_runs=8, num_iters=60, seed=1)
  assert np.trapezoid(dens.density, dens.grid) == pytest.approx(1.0, abs=1e-6)
  mean = np.trapezoid(dens.grid * dens.density, dens.grid)
  assert mean == pytest.approx(dens.moment(1), rel=1e-6, abs=1e-9)
  # Variance of a Rademacher Rayleigh quotient: 2 (||H||_F^2 - sum h_ii^2) / n^2.
  n = len(evals)
  sd = np.sqrt(2 * (np.sum(hess**2) - np.sum(np.diag(hess)**2)) / n**2 / 8)
  assert abs(mean - np.trace(hess) / n) <= 4 * sd
  # The extreme quadrature nodes converge to the extreme eigenvalues.
  assert dens.nodes.max() == pytest.approx(evals[-1], rel=1e-6)


def test_density_of_known_spectrum_has_mass_at_the_eigenvalues():
  lam = np.repeat([1.0, 5.0], [60, 20])
  op = tfs.MatrixOperator(np.diag(lam))
  d = tfs.spectral_density(op, num_runs=20, num_iters=10, sigma=0.1)
  near = lambda c: np.trapezoid(d.density * (abs(d.grid - c) < 0.5), d.grid)
  assert near(1.0) == pytest.approx(0.75, abs=0.1)
  assert near(5.0) == pytest.approx(0.25, abs=0.1)


def test_mirrored_strategy_equals_single_device(tiny_cifar):
  x, y = tiny_cifar
  single = small_models(x.shape[1:])["cnn"]
  strategy = tf.distribute.MirroredStrategy(
      ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
  with strategy.scope():
    mirrored = small_models(x.shape[1:])["cnn"]
  for a, b in zip(mirrored.weights, single.weights):
    a.assign(b.numpy())
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(21)  # odd final batch
  op1 = tfs.HessianOperator(single, XENT, ds)
  op2 = tfs.HessianOperator(mirrored, XENT, ds, strategy=strategy)
  e1 = tfs.top_eigenpairs(op1, k=3, tol=1e-8).eigenvalues
  e2 = tfs.top_eigenpairs(op2, k=3, tol=1e-8).eigenvalues
  np.testing.assert_allclose(e2, e1, rtol=1e-9)
  assert op2.loss() == pytest.approx(op1.loss(), rel=1e-12)


def test_non_finite_raises(tiny_cifar):
  x, y = tiny_cifar
  model = small_models(x.shape[1:])["mlp"]
  bad = x.copy()
  bad[3, 0, 0, 0] = np.nan
  op = tfs.HessianOperator(model, XENT, (bad, y))
  with pytest.raises(tfs.NonFiniteError, match="non-finite loss"):
    tfs.top_eigenpairs(op, k=2)
  with pytest.raises(tfs.NonFiniteError, match="loss"):
    op.loss()


def test_non_finite_hvp_with_finite_loss_raises():
  """Lanczos refuses a non-finite matvec instead of returning NaN."""
  op = tfs.MatrixOperator(np.diag([np.inf, 1.0, 1.0]))
  with pytest.raises(tfs.NonFiniteError, match="Hessian-vector product"):
    tfs.top_eigenpairs(op, k=1)


def test_bad_arguments(tiny_cifar):
  x, y = tiny_cifar
  model = small_models(x.shape[1:])["mlp"]
  with pytest.raises(ValueError, match="method must be one of"):
    tfs.HessianOperator(model, XENT, (x, y), method="exact")
  with pytest.raises(ValueError, match="batch_size"):
    tfs.HessianOperator(model, XENT, (x, y), batch_size=0)
  with pytest.raises(ValueError, match="x has 64 examples but y has 3"):
    tfs.HessianOperator(model, XENT, (x, y[:3]))
  with pytest.raises(ValueError, match="infinite"):
    tfs.HessianOperator(model, XENT,
                        tf.data.Dataset.from_tensor_slices((x, y)).repeat())
  op = tfs.HessianOperator(model, XENT, (x, y))
  with pytest.raises(ValueError, match="which must be one of"):
    tfs.top_eigenpairs(op, which="middle")
  with pytest.raises(ValueError, match="k must be a positive integer"):
    tfs.top_eigenpairs(op, k=0)
  # It used to return 2 values silently.
  with pytest.raises(ValueError, match="num_iters=2 Lanczos steps cannot give k=5"):
    tfs.top_eigenpairs(op, k=5, num_iters=2)
  with pytest.raises(ValueError, match="basis_dtype must be float32 or float64"):
    tfs.top_eigenpairs(op, k=1, basis_dtype="int8")
  with pytest.raises(ValueError, match="shape"):
    op.matvec([tf.zeros((2, 2), tf.float64)] * len(op.shapes))


def test_flatten_unflatten_round_trip():
  parts = [tf.reshape(tf.range(6.0), (2, 3)), tf.constant([7.0]),
           tf.zeros((2, 1, 2))]
  flat = tfs.flatten(parts)
  assert flat.shape == (11,)
  back = tfs.unflatten(flat, parts)
  for a, b in zip(parts, back):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  with pytest.raises(ValueError, match="expected"):
    tfs.unflatten(flat[:5], parts)


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum():
  rng = np.random.default_rng(4)
  n = 300
  q, _ = np.linalg.qr(rng.standard_normal((n, n)))
  lam = 100.0 / np.arange(1, n + 1) ** 1.5  # a few large eigenvalues, like a Hessian
  op = tfs.MatrixOperator((q * lam) @ q.T)
  hutch = [tfs.hessian_trace(op, num_samples=30, seed=s).estimate for s in range(20)]
  hpp = [tfs.hutchpp_trace(op, num_matvecs=30, seed=s) for s in range(20)]
  errors_hpp = np.array([h.estimate for h in hpp]) - lam.sum()
  errors_hutch = np.array(hutch) - lam.sum()
  assert np.sqrt(np.mean(errors_hpp**2)) < 0.3 * np.sqrt(np.mean(errors_hutch**2))
  # The reported standard error covers the error.
  assert np.mean(np.abs(errors_hpp) <= 3 * np.array([h.stderr for h in hpp])) >= 0.9
  assert hpp[0].num_matvecs == 30
