"""Sharpness measures against closed forms: a linear model with MSE, whose
loss is exactly quadratic in its weights (H = (1/N) sum x x^T per output),
a one-weight model for Keskar's box, the dense Hessian and per-example
jacobians for the Fisher-Rao norm, relative flatness and Hutchinson's
estimators, and the invariance of adaptive measures to rescaled ReLU layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sharpness as tfs
from exact_hessian import exact_hessian, keras_dtype
from tf_sharpness import sharpness as S

L = keras.layers


def half_mse(y, p):
  return 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(p - y), axis=-1))


def quadratic(at_minimum=True, seed=0, n=40, d=4, k=2):
  """Linear model f(x) = W x + b with 0.5 ||f - y||^2: L is quadratic in
  (W, b); at_minimum puts (W, b) at the least-squares solution."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) * np.array([2.0, 1.0, 0.6, 0.3])[:d]
  y = rng.normal(size=(n, k))
  with keras_dtype("float64"):
    model = keras.Sequential([keras.Input((d,)), L.Dense(k)])
  if at_minimum:
    a = np.hstack([x, np.ones((n, 1))])
    sol = np.linalg.lstsq(a, y, rcond=None)[0]
    model.layers[0].kernel.assign(sol[:d])
    model.layers[0].bias.assign(sol[d])
  else:
    model.layers[0].bias.assign(rng.normal(size=k))
  return model, x, y


def test_worst_case_l2_at_a_minimum_is_rho2_lambda_max_over_2():
  model, x, y = quadratic()
  h = exact_hessian(model, half_mse, x, y)
  rho = 0.05
  res = S.worst_case_sharpness(model, half_mse, (x, y), rho=rho, steps=30)
  expected = rho ** 2 * np.linalg.eigvalsh(h)[-1] / 2
  assert res.lower_bound and res.value <= expected * (1 + 1e-9)
  np.testing.assert_allclose(res.value, expected, rtol=1e-3)
  assert res.num_gradients == 30


def test_adaptive_worst_case_is_rho2_lambda_max_of_THT_over_2():
  model, x, y = quadratic()
  h = exact_hessian(model, half_mse, x, y)
  t = np.abs(np.concatenate([v.numpy().ravel() for v in model.trainable_variables]))
  rho = 0.05
  expected = rho ** 2 * np.linalg.eigvalsh(t[:, None] * h * t[None, :])[-1] / 2
  # converged to a stated tolerance, whatever the machine's rounding (the
  # ascent starts from a gradient that is rounding noise at the minimum)
  res = S.worst_case_sharpness(model, half_mse, (x, y), rho=rho, adaptive=True,
                               steps=3000, tol=1e-6)
  assert res.converged and res.remaining <= 1e-6 * res.value
  assert res.num_gradients < 3000
  np.testing.assert_allclose(res.value, expected, rtol=1e-4)
  # a fixed, too small number of steps is reported as not converged
  short = S.worst_case_sharpness(model, half_mse, (x, y), rho=rho, adaptive=True, steps=5)
  assert not short.converged and short.value < expected


def test_first_ascent_step_is_sams_and_more_steps_never_lose():
  """Away from a minimum the value after one step is the first-order (SAM)
  point's, and the reported maximum is at least that."""
  model, x, y = quadratic(at_minimum=False)
  ev = tfs.LossEvaluator(model, half_mse, (x, y))
  g = np.concatenate([np.ravel(t) for t in ev.gradient()])
  theta, rho = ev.parameters(), 0.1
  sam_point = theta + rho * g / np.linalg.norm(g)
  sam_value = ev.loss_at(tfs.curvature.vectors.split_numpy(sam_point, ev.shapes)) - ev.loss()
  one = S.worst_case_sharpness(rho=rho, steps=1, evaluator=ev)
  many = S.worst_case_sharpness(rho=rho, steps=10, evaluator=ev)
  np.testing.assert_allclose(one.value, sam_value, rtol=1e-10)
  assert many.value >= one.value
  # the trust-region maximum (exact, by the secular equation) bounds it above
  h = exact_hessian(model, half_mse, x, y)
  w, q = np.linalg.eigh(h)
  b = q.T @ g
  lo, hi = w[-1] + 1e-12, w[-1] + 1e6
  for _ in range(200):  # ||(mu - H)^-1 g|| = rho
    mu = 0.5 * (lo + hi)
    lo, hi = (mu, hi) if np.linalg.norm(b / (mu - w)) > rho else (lo, mu)
  d = q @ (b / (mu - w))
  exact = g @ d + 0.5 * d @ h @ d
  assert many.value <= exact * (1 + 1e-9)
  np.testing.assert_allclose(many.value, exact, rtol=1e-4)


def test_linf_worst_case_stays_in_the_box_and_m_equal_n_is_full_batch():
  model, x, y = quadratic(at_minimum=False)
  full = S.worst_case_sharpness(model, half_mse, (x, y), rho=0.02, norm="linf", steps=5)
  same = S.worst_case_sharpness(model, half_mse, (x, y), rho=0.02, norm="linf", steps=5,
                                m=len(y))
  np.testing.assert_allclose(same.value, full.value, rtol=1e-12)
  # a linear bound: |L(w + d) - L(w)| <= rho ||g||_1 + rho^2 ||H||_inf-ish; check
  # the value is at least the first-order vertex's gain rho ||g||_1 - O(rho^2)
  g = np.concatenate([np.ravel(t) for t in tfs.LossEvaluator(model, half_mse, (x, y)).gradient()])
  h = exact_hessian(model, half_mse, x, y)
  # in the box |d_i| <= rho: g.d + d.H.d/2 lies between the first-order
  # vertex's value and rho ||g||_1 + rho^2 sum|H| / 2
  vertex = 0.02 * np.sign(g)
  assert full.value >= g @ vertex + 0.5 * vertex @ h @ vertex - 1e-12
  assert full.value <= 0.02 * np.abs(g).sum() + 0.5 * 0.02 ** 2 * np.abs(h).sum()
  halves = S.worst_case_sharpness(model, half_mse, (x, y), rho=0.02, norm="linf",
                                  steps=5, m=len(y) // 2)
  assert len(halves.trace) == 2 and halves.stderr is not None


def test_average_case_is_sigma2_trace_over_2():
  model, x, y = quadratic(at_minimum=False)
  h = exact_hessian(model, half_mse, x, y)
  sigma = 0.01
  res = S.average_case_sharpness(model, half_mse, (x, y), sigma=sigma, samples=400)
  expected = sigma ** 2 * np.trace(h) / 2
  assert abs(res.value - expected) < 4 * res.stderr
  t = np.abs(np.concatenate([v.numpy().ravel() for v in model.trainable_variables]))
  ada = S.average_case_sharpness(model, half_mse, (x, y), sigma=sigma, adaptive=True,
                                 samples=400)
  assert abs(ada.value - sigma ** 2 * np.sum(t ** 2 * np.diag(h)) / 2) < 4 * ada.stderr


def test_keskar_sharpness_of_one_weight():
  """L(w) = 0.5 mean (w x - y)^2 with y = w* x: at w*, the box |d| <= eps
  (|w*| + 1) gives 100 * 0.5 h (eps (|w*| + 1))^2 / (1 + 0)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(30, 1))
  w_star = 0.7
  with keras_dtype("float64"):
    model = keras.Sequential([keras.Input((1,)), L.Dense(1, use_bias=False)])
  model.layers[0].kernel.assign([[w_star]])
  eps = 1e-2
  res = S.keskar_sharpness(model, half_mse, (x, w_star * x), epsilon=eps)
  h = np.mean(x ** 2)
  np.testing.assert_allclose(res.value, 100 * 0.5 * h * (eps * (w_star + 1)) ** 2, rtol=1e-9)


def small_relu_mlp(seed=0):
  keras.utils.set_random_seed(seed)
  with keras_dtype("float64"):
    return keras.Sequential([keras.Input((5,)), L.Dense(6, activation="relu"),
                             L.Dense(3)])


def xent(y, p):
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), p))


def test_adaptive_measures_are_invariant_to_rescaled_relu_layers():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(32, 5)), rng.integers(0, 3, 32)
  a, b = small_relu_mlp(), small_relu_mlp()
  k1, b1 = a.layers[0].kernel.numpy(), a.layers[0].bias.numpy()
  b.layers[0].kernel.assign(4.0 * k1)
  b.layers[0].bias.assign(4.0 * b1)
  b.layers[1].kernel.assign(a.layers[1].kernel.numpy() / 4.0)
  kw = dict(rho=0.1, adaptive=True, steps=5)
  np.testing.assert_allclose(S.worst_case_sharpness(b, xent, (x, y), **kw).value,
                             S.worst_case_sharpness(a, xent, (x, y), **kw).value, rtol=1e-9)
  kw = dict(sigma=0.1, adaptive=True, samples=5)
  np.testing.assert_allclose(S.average_case_sharpness(b, xent, (x, y), **kw).value,
                             S.average_case_sharpness(a, xent, (x, y), **kw).value, rtol=1e-9)
  plain_a = S.worst_case_sharpness(a, xent, (x, y), rho=0.1, steps=5).value
  plain_b = S.worst_case_sharpness(b, xent, (x, y), rho=0.1, steps=5).value
  assert abs(plain_a / plain_b - 1) > 1e-2  # the plain measure is not invariant


def test_fisher_rao_norm_matches_per_example_gradients():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(16, 5)), rng.integers(0, 3, 16)
  model = small_relu_mlp(1)
  per_example = lambda t, p: tf.nn.sparse_softmax_cross_entropy_with_logits(
      tf.cast(t, tf.int32), p)
  theta = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
  dots = []
  for n in range(16):
    with tf.GradientTape() as tape:
      loss = per_example(y[n:n + 1], model(x[n:n + 1]))[0]
    g = np.concatenate([np.ravel(t) for t in tape.gradient(loss, model.trainable_variables)])
    dots.append(g @ theta)
  expected = np.sqrt(np.mean(np.square(dots)))
  np.testing.assert_allclose(S.fisher_rao_norm(model, per_example, (x, y)), expected,
                             rtol=1e-10)


def test_hutchinson_estimators_and_relative_flatness_against_the_dense_hessian():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(24, 5)), rng.integers(0, 3, 24)
  model = small_relu_mlp(2)
  h = exact_hessian(model, xent, x, y)
  op = tfs.HessianOperator(model, xent, (x, y))
  fro = S.hessian_frobenius(op, samples=200)
  assert abs(fro.value - np.sum(h * h)) < 4 * fro.stderr
  diag = S.hessian_diagonal(op, samples=200)
  assert np.all(np.abs(diag.estimate - np.diag(h)) < 4 * diag.stderr + 1e-12)
  # kappa = sum_{s,s'} <w_s, w_s'> tr(H_{s,s'}) for the output layer's kernel
  dense = model.layers[1]
  w = dense.kernel.numpy()
  start = sum(int(np.prod(v.shape)) for v in model.trainable_variables[:2])
  block = h[start:start + w.size, start:start + w.size]  # row-major (in, out)
  n_in, n_out = w.shape
  tr = np.einsum("isit->st", block.reshape(n_in, n_out, n_in, n_out))
  kappa = np.sum((w.T @ w) * tr)
  est = S.relative_flatness(op, dense, samples=400)
  assert abs(est.value - kappa) < 4 * est.stderr
  with pytest.raises(ValueError, match="no 2-D kernel"):
    S.relative_flatness(op, L.ReLU())


def test_bad_arguments_name_themselves():
  model, x, y = quadratic()
  with pytest.raises(ValueError, match="rho must be a positive number"):
    S.worst_case_sharpness(model, half_mse, (x, y), rho=0)
  with pytest.raises(ValueError, match="norm must be one of"):
    S.worst_case_sharpness(model, half_mse, (x, y), rho=0.1, norm="l1")
  with pytest.raises(ValueError, match="m=1000 exceeds"):
    S.worst_case_sharpness(model, half_mse, (x, y), rho=0.1, m=1000)
  with pytest.raises(ValueError, match="samples must be an integer >= 2"):
    S.average_case_sharpness(model, half_mse, (x, y), sigma=0.1, samples=1)
  with pytest.raises(ValueError, match="samples must be an integer >= 2"):
    S.hessian_frobenius(tfs.HessianOperator(model, half_mse, (x, y)), samples=1)
  with pytest.raises(ValueError, match="m: m-sharpness draws its own subsets"):
    S.worst_case_sharpness(rho=0.1, m=4, evaluator=tfs.LossEvaluator(model, half_mse, (x, y)))


# ------------------------------------------------------------ along training


def test_sharpness_probe_in_model_fit_records_every_measure():
  from model_families import build
  fam = build("embedding")
  probe = tfs.probes.SharpnessProbe(tfs.probes.Schedule(every=2, at_end=True),
                                    measures=sorted(S.MEASURES), steps=3, samples=3)
  cb = tfs.SpectrumCallback(None, (fam.x, fam.y), every=2, k=1, probes=[probe],
                            verbose=False)
  fam.model.fit(fam.x, fam.y, batch_size=12, epochs=1, callbacks=[cb], verbose=0)
  rec = cb.records[-1]
  assert set(rec["sharpness"]) == set(S.MEASURES)
  assert set(rec["sharpness_stderr"]) == {"avg", "adaptive_avg", "trace_h2"}
  # the probe measures at the model's current weights, as the functions do
  ev = tfs.HessianOperator(fam.model, fam.exact_loss, (fam.x, fam.y))
  again = S.measure("worst_l2", ev, S.Settings(steps=3, samples=3, seed=rec["step"]))
  np.testing.assert_allclose(rec["sharpness"]["worst_l2"], again.value, rtol=1e-6)
  with pytest.raises(ValueError, match="measures must be a non-empty list"):
    tfs.probes.SharpnessProbe(tfs.probes.Schedule(every=1), measures=["sharpest"])
