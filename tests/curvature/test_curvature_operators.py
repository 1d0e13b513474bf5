"""GGN, empirical Fisher and preconditioned Hessian against exact matrices,
and subspace tracking (warm starts, rotation)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sharpness as tfs
from tf_sharpness.curvature import tracking, vectors
from exact_hessian import exact_hessian, keras_dtype, small_models

XENT = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
XENT_EACH = keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                       reduction=None,
                                                       dtype="float64")


def _flat_params(model):
  params = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
  shapes = [p.shape for p in params]
  sizes = [int(np.prod(s)) for s in shapes]
  flat = tf.concat([tf.reshape(p, [-1]) for p in params], 0)
  nt = [v.value for v in model.non_trainable_variables]
  def outputs(theta, x):
    parts = [tf.reshape(t, s) for t, s in zip(tf.split(theta, sizes), shapes)]
    return model.stateless_call(parts, nt, x, training=False)[0]
  return flat, outputs


def exact_ggn(model, x, y):
  flat, outputs = _flat_params(model)
  with tf.GradientTape() as tape:
    tape.watch(flat)
    z = outputs(flat, x)
  jac = tape.jacobian(z, flat).numpy()  # [N, C, P]
  p = tf.nn.softmax(z).numpy()
  n = len(y)
  g = np.zeros((flat.shape[0],) * 2)
  for i in range(n):
    h = (np.diag(p[i]) - np.outer(p[i], p[i])) / n
    g += jac[i].T @ h @ jac[i]
  return g


def exact_fisher(model, x, y):
  flat, outputs = _flat_params(model)
  with tf.GradientTape() as tape:
    tape.watch(flat)
    losses = XENT_EACH(y, outputs(flat, x))
  grads = tape.jacobian(losses, flat).numpy()  # [N, P]
  return grads.T @ grads / len(y)


@pytest.fixture(scope="module")
def mlp(tiny_cifar):
  x, y = tiny_cifar
  return small_models(x.shape[1:])["mlp"], x, y


def _check_top(op, exact, k=5):
  evals = np.linalg.eigvalsh(exact)[::-1][:k]
  top = tfs.top_eigenpairs(op, k=k, tol=1e-7, num_iters=400)
  np.testing.assert_allclose(top.eigenvalues, evals, rtol=1e-4)
  return top


def test_ggn_top5_matches_exact(mlp):
  model, x, y = mlp
  ggn = exact_ggn(model, x, y)
  assert np.linalg.eigvalsh(ggn).min() > -1e-10  # PSD
  op = tfs.GaussNewtonOperator(model, XENT, (x, y), batch_size=24)
  _check_top(op, ggn)
  # For a linear model the GGN is the Hessian.
  with keras_dtype("float64"):
    lin = keras.Sequential([keras.Input(x.shape[1:], dtype="float64"),
                            keras.layers.Flatten(), keras.layers.Dense(10)])
  v = np.random.default_rng(0).standard_normal(sum(
      int(np.prod(w.shape)) for w in lin.trainable_variables))
  vs = vectors.from_numpy(v, [w.shape for w in lin.trainable_variables], tf.float64)
  np.testing.assert_allclose(
      vectors.to_numpy(tfs.GaussNewtonOperator(lin, XENT, (x, y)).matvec(vs)),
      vectors.to_numpy(tfs.HessianOperator(lin, XENT, (x, y)).matvec(vs)),
      rtol=1e-9, atol=1e-12)


def test_fisher_top5_matches_exact(mlp):
  model, x, y = mlp
  fisher = exact_fisher(model, x, y)
  op = tfs.FisherOperator(model, XENT_EACH, (x, y), batch_size=24)
  _check_top(op, fisher)
  with pytest.raises(ValueError, match="per-example losses"):
    tfs.FisherOperator(model, XENT, (x, y)).matvec(
        [tf.zeros(s, tf.float64) for s in op.shapes])


def test_preconditioned_hessian_matches_exact(mlp):
  model, x, y = mlp
  hess = exact_hessian(model, XENT, x, y)
  rng = np.random.default_rng(2)
  diag = [rng.uniform(0.5, 2.0, w.shape) for w in model.trainable_variables]
  d = np.concatenate([a.reshape(-1) for a in diag])
  exact = hess / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
  op = tfs.PreconditionedOperator(tfs.HessianOperator(model, XENT, (x, y)), diag)
  _check_top(op, exact)
  with pytest.raises(ValueError, match="positive"):
    tfs.PreconditionedOperator(op.operator, [-a for a in diag])


def test_adam_preconditioner_formula(mlp):
  model, x, y = mlp
  opt = keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.99, epsilon=1e-7)
  for _ in range(3):
    with tf.GradientTape() as tape:
      loss = XENT(y, model(x))
    opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
  p = tfs.adam_preconditioner(opt, model.trainable_variables)
  v = opt._velocities[0].numpy()
  want = (1 - 0.9**3) * (np.sqrt(v / (1 - 0.99**3)) + 1e-7)
  np.testing.assert_allclose(p[0], want, rtol=1e-12)
  with pytest.raises(ValueError, match="second-moment"):
    tfs.adam_preconditioner(keras.optimizers.SGD(), model.trainable_variables)


def test_subspace_rotation_of_known_subspaces():
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.standard_normal((20, 4)))
  theta = 0.3
  rotated = q.copy()
  rotated[:, 0] = np.cos(theta) * q[:, 0] + np.sin(theta) * q[:, 3]
  rot = tracking.subspace_rotation(q[:, :2].T, rotated[:, :2].T,
                                   gradient=q[:, 1] + q[:, 2])
  np.testing.assert_allclose(rot.principal_angles, [0.0, theta], atol=1e-12)
  np.testing.assert_allclose(rot.overlaps, [[np.cos(theta), 0], [0, 1]], atol=1e-12)
  assert rot.gradient_overlap == pytest.approx(1 / np.sqrt(2))


def test_warm_start_needs_fewer_matvecs_on_a_perturbed_operator():
  rng = np.random.default_rng(1)
  n = 400
  q, _ = np.linalg.qr(rng.standard_normal((n, n)))
  lam = np.concatenate([[20, 15, 12, 10, 9], rng.uniform(0, 5, n - 5)])
  a = (q * lam) @ q.T
  e = rng.standard_normal((n, n)) * 1e-3
  b = a + (e + e.T)
  first = tfs.top_eigenpairs(tfs.MatrixOperator(a), k=5, tol=1e-6)
  cold = tfs.top_eigenpairs(tfs.MatrixOperator(b), k=5, tol=1e-6, seed=3)
  warm = tfs.top_eigenpairs(tfs.MatrixOperator(b), k=5, tol=1e-6, seed=3,
                            start=tracking.warm_start_vector(first, seed=3))
  np.testing.assert_allclose(warm.eigenvalues, cold.eigenvalues, rtol=1e-6)
  assert warm.num_matvecs < cold.num_matvecs


def test_ggn_of_a_multi_output_model_is_the_sum_over_its_outputs():
  """loss = cross-entropy(z1) + MSE(z2) of a two-output model: G = J1^T H1 J1
  + J2^T H2 J2, the sum of the GGNs of the one-output models that share its
  layers (the single-output GGN is checked against its closed form above).
  (Failed before: the outputs were packed into one tensor.)"""
  rng = np.random.default_rng(0)
  x, y1, y2 = rng.normal(size=(24, 4)), rng.integers(0, 3, 24), rng.normal(size=(24, 2))
  keras.utils.set_random_seed(0)
  inp = keras.Input((4,), dtype="float64")
  h = keras.layers.Dense(5, activation="tanh", dtype="float64")(inp)
  out1 = keras.layers.Dense(3, dtype="float64")(h)
  out2 = keras.layers.Dense(2, dtype="float64")(h)
  both = keras.Model(inp, [out1, out2])
  xent = XENT
  mse = lambda t, p: tf.reduce_mean(tf.square(p - t))
  total = lambda t, p: xent(t[0], p[0]) + mse(t[1], p[1])
  g = tfs.GaussNewtonOperator(both, total, (x, (y1, y2)), batch_size=10)
  v = [rng.normal(size=s) for s in g.shapes]
  got = np.concatenate([np.ravel(t) for t in g.matvec(v)])
  expected = np.zeros_like(got)
  for model, loss, y in ((keras.Model(inp, out1), xent, y1), (keras.Model(inp, out2), mse, y2)):
    part = tfs.GaussNewtonOperator(model, loss, (x, y), batch_size=10)
    index = {id(w): i for i, w in enumerate(both.trainable_variables)}
    flat = [np.zeros(s) for s in g.shapes]
    for w, t in zip(model.trainable_variables, part.matvec(
        [v[index[id(w)]] for w in model.trainable_variables])):
      flat[index[id(w)]] = np.asarray(t)
    expected += np.concatenate([np.ravel(t) for t in flat])
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
