"""Landscape probes on an exact quadratic L(theta) = 0.5 theta^T A theta.

A bias-free linear model f(x) = x . theta with loss 0.5 mean (f(x) - 0)^2
on inputs X = sqrt(n) diag(sqrt(lam)) Q^T has Hessian X^T X / n = A =
Q diag(lam) Q^T exactly, so every probe has a closed form."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sharpness as tfs
from tf_sharpness import landscape
from exact_hessian import keras_dtype

N = 6
LAM = np.array([8.0, 5.0, 3.0, 1.0, 0.5, 0.25])


def half_mse(y, pred):
  return 0.5 * tf.reduce_mean(tf.square(pred[:, 0] - tf.cast(y, pred.dtype)))


@pytest.fixture()
def quadratic():
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.standard_normal((N, N)))
  x = (np.sqrt(N) * np.sqrt(LAM)[:, None] * q.T)
  y = np.zeros(N)
  with keras_dtype("float64"):
    model = keras.Sequential([keras.Input((N,), dtype="float64"),
                              keras.layers.Dense(1, use_bias=False)])
  theta = rng.standard_normal(N)
  model.layers[0].kernel.assign(theta[:, None])
  op = tfs.HessianOperator(model, half_mse, (x, y))
  a = (q * LAM) @ q.T
  return model, op, q, a, theta, (x, y)


def as_dir(v):
  return [np.asarray(v).reshape(N, 1)]


def weights(model):
  return [w.numpy().copy() for w in model.weights]


def test_exact_hessian_is_a(quadratic):
  _, op, q, a, theta, _ = quadratic
  top = tfs.top_eigenpairs(op, k=3, tol=1e-10)
  np.testing.assert_allclose(top.eigenvalues, LAM[:3], rtol=1e-10)
  assert op.loss() == pytest.approx(0.5 * theta @ a @ theta, rel=1e-12)


def test_slice_along_eigenvectors_is_the_analytic_parabola(quadratic):
  model, op, q, a, theta, data = quadratic
  before = weights(model)
  g = a @ theta
  lr = 0.1
  dirs = {f"e{i + 1}": as_dir(q[:, i]) for i in (0, 2, 4)}
  slices = landscape.eigenvector_slices(op, op, [data], dirs, lr,
                                        alphas=[-2, -1, 0, 0.5, 1, 4])
  for s, i in zip(slices, (0, 2, 4)):
    delta = lr * abs(g @ q[:, i])
    assert s.scale == pytest.approx(delta, rel=1e-12)
    t = s.alphas * delta
    want = 0.5 * theta @ a @ theta + t * (g @ q[:, i]) + 0.5 * LAM[i] * t**2
    np.testing.assert_allclose(s.losses, want, rtol=1e-12)
  plain = landscape.loss_along(model, half_mse, data, as_dir(q[:, 1]), [0, 1, 2])
  want = [0.5 * (theta + c * q[:, 1]) @ a @ (theta + c * q[:, 1]) for c in (0, 1, 2)]
  np.testing.assert_allclose(plain, want, rtol=1e-12)
  for w0, w1 in zip(before, weights(model)):
    np.testing.assert_array_equal(w0, w1)


def test_step_analysis_is_analytic(quadratic):
  model, op, q, a, theta, data = quadratic
  g = a @ theta
  lr = 0.1
  factors = [0.5, 1, 2, 4]
  dirs = {"e1": as_dir(q[:, 0]), "full": None}
  changes = landscape.step_analysis(op, [data, data], dirs, lr, factors)
  loss0 = 0.5 * theta @ a @ theta
  for f, c in zip(factors, changes[0]):
    s = f * lr * (g @ q[:, 0])
    after = loss0 - s * (g @ q[:, 0]) + 0.5 * LAM[0] * s**2
    assert c == pytest.approx(100 * (after / loss0 - 1), rel=1e-10)
  for f, c in zip(factors, changes[1]):
    t = theta - f * lr * g
    assert c == pytest.approx(100 * (0.5 * t @ a @ t / loss0 - 1), rel=1e-10)
  # Along e1 (lambda = 8, lr = 0.1) the minimum of the parabola is at
  # eta' = 1 / lambda = 1.25 eta: the full step still lowers the loss, 4x
  # overshoots.
  assert changes[0][1] < 0 < changes[0][3]


def test_walk_is_the_parabola_and_finds_its_minimum(quadratic):
  model, op, q, a, theta, _ = quadratic
  theta_next = theta - 0.3 * (a @ theta)  # an overshooting GD step
  w = landscape.walk(op, theta, theta_next, num_points=11, extend=0.5)
  d = theta_next - theta
  want = [0.5 * (theta + s * d) @ a @ (theta + s * d) for s in w.alphas]
  np.testing.assert_allclose(w.losses, want, rtol=1e-12)
  argmin = -(theta @ a @ d) / (d @ a @ d)
  assert w.argmin == pytest.approx(argmin, rel=1e-9)
  assert w.min_loss == pytest.approx(
      0.5 * (theta + argmin * d) @ a @ (theta + argmin * d), rel=1e-9)
  assert w.convex
  assert w.interior_minimum == (0 < argmin < 1)


def test_surface_and_directions(quadratic):
  model, op, q, a, theta, _ = quadratic
  xs, ys = [-1, 0, 1], [0, 2]
  z = landscape.surface(op, as_dir(q[:, 0]), as_dir(q[:, 1]), xs, ys)
  for i, y in enumerate(ys):
    for j, x in enumerate(xs):
      t = theta + x * q[:, 0] + y * q[:, 1]
      assert z[i, j] == pytest.approx(0.5 * t @ a @ t, rel=1e-12)
  r = landscape.random_direction(op, seed=1)
  assert np.linalg.norm(r[0]) == pytest.approx(1.0)
  f = landscape.filter_normalized_direction(op, seed=1)
  np.testing.assert_allclose(np.linalg.norm(f[0], axis=0),
                             np.linalg.norm(theta), rtol=1e-12)


def test_weights_unchanged_after_a_failing_probe(quadratic):
  model, op, q, a, theta, data = quadratic
  before = weights(model)
  bad = as_dir(np.full(N, np.nan))
  with pytest.raises(tfs.NonFiniteError):
    landscape.loss_along(op, direction=bad, alphas=[1.0])
  with pytest.raises(ValueError, match="direction has"):
    landscape.loss_along(op, direction=[np.ones((3, 1))], alphas=[1.0])
  for w0, w1 in zip(before, weights(model)):
    np.testing.assert_array_equal(w0, w1)


def test_component_scaling_is_analytic(quadratic):
  """On L = 0.5 theta^T A theta, along e = q_i: L(theta - t s e) is a
  parabola with its minimum at t* = (g.e) / (s lambda_i) = 1 / (eta lambda_i)."""
  model, op, q, a, theta, data = quadratic
  before = weights(model)
  g = a @ theta
  loss0 = 0.5 * theta @ a @ theta
  alphas = [0.0, 0.5, 1.0, 2.0]
  for lr, i in [(0.1, 0), (0.3, 0), (0.1, 3)]:
    e = q[:, i]
    res = landscape.component_scaling(op, [data, data], as_dir(e), lr, alphas)
    s = lr * (g @ e)
    for j, al in enumerate(alphas):
      t = theta - lr * g + (1 - al) * s * e
      assert res.full_step[j] == pytest.approx(100 * (0.5 * t @ a @ t / loss0 - 1),
                                               rel=1e-9, abs=1e-9)
      t = theta - al * s * e
      assert res.component_only[j] == pytest.approx(100 * (0.5 * t @ a @ t / loss0 - 1),
                                                    rel=1e-9, abs=1e-9)
    t_star = 1.0 / (lr * LAM[i])
    want = min(t_star, 2.0)  # an end of the grid when the minimum lies beyond it
    np.testing.assert_allclose(res.line_minimum, [want, want], rtol=1e-9)
    assert res.overshoot_fraction == float(t_star < 1)
    assert res.increase_fraction == float(lr * LAM[i] > 2)
  # alpha = 1 is the SGD step; alpha = 0 removes e from it
  full = landscape.step_analysis(op, [data], {"full": None}, 0.3, [1.0])[0, 0]
  res = landscape.component_scaling(op, [data], as_dir(q[:, 0]), 0.3, alphas)
  assert res.full_step[2] == pytest.approx(full, rel=1e-12)
  # lr 0.3, lambda 8: eta lambda = 2.4 > 2, the e1 step raises the loss; doubling it more so
  assert res.component_only[1] < 0 < res.component_only[2] < res.component_only[3]
  assert res.full_step[0] < res.full_step[2]
  for w0, w1 in zip(before, weights(model)):
    np.testing.assert_array_equal(w0, w1)
  with pytest.raises(ValueError, match="line"):
    landscape.component_scaling(op, [data], as_dir(q[:, 0]), 0.1, line=[0.5, 1, 2])


def test_component_scaling_without_an_e_component(quadratic):
  """e orthogonal to the gradient: the step has no e part, so no minimum
  along e is defined and none is counted (NaN, null in JSON)."""
  model, op, q, a, theta, data = quadratic
  g = a @ theta
  e = q[:, 0] - (q[:, 0] @ g) / (g @ g) * g
  e /= np.linalg.norm(e)
  res = landscape.component_scaling(op, [data], as_dir(e), 0.1)
  assert np.isnan(res.line_minimum[0]) and np.isnan(res.overshoot_fraction)
  assert res.increase_fraction == 0.0
  record = res.to_json()
  assert record["line_minimum"] == [None] and record["overshoot_fraction"] is None
  np.testing.assert_allclose(res.component_only, 0.0, atol=1e-9)
