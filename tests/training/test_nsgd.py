"""NSGD against a numpy reference of its rule, Keras SGD, and analytic quadratics."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sharpness as tfs
from tf_sharpness.callbacks import NSGDRefresh

SHAPES = [(3, 4), (4,), (2, 2, 3)]
DIM = sum(int(np.prod(s)) for s in SHAPES)


def _split(flat):
  out, o = [], 0
  for s in SHAPES:
    n = int(np.prod(s))
    out.append(flat[o:o + n].reshape(s))
    o += n
  return out


def _flat(parts):
  return np.concatenate([np.asarray(p, np.float64).reshape(-1) for p in parts])


def _reference(theta, grads, directions, *, lr, gamma, complement, momentum,
               nesterov, velocity):
  """The rule of the NSGD docstring on flat numpy vectors."""
  q, _ = np.linalg.qr(np.stack(directions, 1))
  p = q @ q.T
  outs = []
  for g in grads:
    v = momentum * velocity - lr * g
    s = momentum * v - lr * g if nesterov else v
    update = gamma * p @ s + complement * (s - p @ s)
    theta = theta + update
    velocity = v
    outs.append(theta.copy())
  return outs


@pytest.mark.parametrize("gamma,complement,momentum,nesterov", [
    (0.1, 1.0, 0.0, False), (5.0, 1.0, 0.0, False), (0.0, 1.0, 0.9, False),
    (1.0, 0.0, 0.5, False), (2.0, 0.5, 0.9, True), (0.01, 1.0, 0.9, True)])
def test_steps_match_numpy_reference(gamma, complement, momentum, nesterov):
  rng = np.random.default_rng(0)
  theta0 = rng.standard_normal(DIM)
  variables = [tf.Variable(p.astype(np.float32)) for p in _split(theta0)]
  k = 3
  directions = [rng.standard_normal(DIM) for _ in range(k)]
  opt = tfs.NSGD(learning_rate=0.1, gamma=gamma, top_k=k, complement=complement,
                 momentum=momentum, nesterov=nesterov)
  opt.build(variables)
  opt.set_directions([_split(d) for d in directions])
  grads = [rng.standard_normal(DIM) for _ in range(3)]

  @tf.function
  def apply(g):
    opt.apply_gradients(zip(g, variables))

  for g in grads:
    apply([tf.constant(p.astype(np.float32)) for p in _split(g)])
  want = _reference(theta0, grads, directions, lr=0.1, gamma=gamma,
                    complement=complement, momentum=momentum, nesterov=nesterov,
                    velocity=np.zeros(DIM))[-1]
  np.testing.assert_allclose(_flat(variables), want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False),
                                                (0.9, True)])
def test_gamma_one_equals_keras_sgd(momentum, nesterov):
  rng = np.random.default_rng(1)
  theta0 = _split(rng.standard_normal(DIM).astype(np.float32))
  a = [tf.Variable(p) for p in theta0]
  b = [tf.Variable(p) for p in theta0]
  nsgd = tfs.NSGD(0.05, gamma=1.0, top_k=2, momentum=momentum, nesterov=nesterov)
  sgd = keras.optimizers.SGD(0.05, momentum=momentum, nesterov=nesterov)
  nsgd.build(a)
  nsgd.set_directions([_split(rng.standard_normal(DIM)) for _ in range(2)])
  for _ in range(4):
    g = [tf.constant(p.astype(np.float32)) for p in _split(rng.standard_normal(DIM))]
    nsgd.apply_gradients(zip(g, a))
    sgd.apply_gradients(zip(g, b))
  np.testing.assert_allclose(_flat(a), _flat(b), rtol=1e-5, atol=1e-6)


def test_without_directions_nsgd_is_sgd():
  rng = np.random.default_rng(2)
  theta0 = _split(rng.standard_normal(DIM).astype(np.float32))
  a = [tf.Variable(p) for p in theta0]
  b = [tf.Variable(p) for p in theta0]
  nsgd = tfs.NSGD(0.05, gamma=0.0, top_k=2)
  sgd = keras.optimizers.SGD(0.05)
  g = [tf.constant(p.astype(np.float32)) for p in _split(rng.standard_normal(DIM))]
  nsgd.apply_gradients(zip(g, a))
  sgd.apply_gradients(zip(g, b))
  np.testing.assert_array_equal(_flat(a), _flat(b))


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_quadratic_coordinates_along_top_directions(gamma):
  """L = 0.5 theta^T A theta: gamma=0 freezes the top coordinates, gamma=2
  doubles their step; the rest moves as under SGD."""
  rng = np.random.default_rng(3)
  n = 10
  q, _ = np.linalg.qr(rng.standard_normal((n, n)))
  lam = np.linspace(10, 1, n)
  a = (q * lam) @ q.T
  theta0 = rng.standard_normal(n)
  var = tf.Variable(theta0.astype(np.float64))
  opt = tfs.NSGD(0.05, gamma=gamma, top_k=2)
  opt.build([var])
  opt.set_directions([[q[:, 0]], [q[:, 1]]])
  g = a @ theta0
  opt.apply_gradients([(tf.constant(g), var)])
  coords_before, coords_after = q.T @ theta0, q.T @ var.numpy()
  sgd_step = -0.05 * (q.T @ g)
  np.testing.assert_allclose(coords_after[:2] - coords_before[:2],
                             gamma * sgd_step[:2], atol=1e-12)
  np.testing.assert_allclose(coords_after[2:] - coords_before[2:], sgd_step[2:],
                             atol=1e-12)


def test_bad_arguments():
  with pytest.raises(ValueError, match="gamma must be"):
    tfs.NSGD(gamma=-1.0)
  with pytest.raises(ValueError, match="top_k must be"):
    tfs.NSGD(top_k=0)
  with pytest.raises(ValueError, match="momentum must be"):
    tfs.NSGD(momentum=1.5)
  opt = tfs.NSGD(top_k=2)
  variables = [tf.Variable(np.zeros(s, np.float32)) for s in SHAPES]
  with pytest.raises(ValueError, match="build the optimizer first"):
    opt.set_directions([])
  opt.build(variables)
  with pytest.raises(ValueError, match="got 1 directions, top_k=2"):
    opt.set_directions([_split(np.ones(DIM))])
  with pytest.raises(ValueError, match="part shapes"):
    opt.set_directions([[np.ones(3)], [np.ones(3)]])
  with pytest.raises(ValueError, match="linearly dependent"):
    opt.set_directions([_split(np.ones(DIM)), _split(2 * np.ones(DIM))])


def test_numpy_scalar_arguments():
  opt = tfs.NSGD(learning_rate=np.float32(0.05), gamma=np.float32(0.1),
                 top_k=np.int64(2), complement=np.float64(0.5),
                 momentum=np.float64(0.9))
  assert (opt.gamma, opt.top_k, opt.complement, opt.momentum) == pytest.approx(
      (0.1, 2, 0.5, 0.9))
  assert type(opt.top_k) is int and type(opt.gamma) is float
  assert type(opt.get_config()["top_k"]) is int  # stays JSON-serializable
  variables = [tf.Variable(np.zeros(s, np.float32)) for s in SHAPES]
  opt.build(variables)
  opt.set_directions([_split(np.eye(DIM)[i]) for i in range(2)])
  opt.apply_gradients(zip([tf.ones(s) for s in SHAPES], variables))
  assert np.all(np.isfinite(_flat(variables)))
  for top_k in (True, np.True_, 2.0, np.float64(2), "2"):
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
      tfs.NSGD(top_k=top_k)
  for kwargs in (dict(gamma=True), dict(gamma=np.float32("nan")),
                 dict(gamma=float("inf")), dict(complement=np.float64(-1)),
                 dict(momentum=np.float32(1.5)), dict(momentum=False)):
    with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be a"):
      tfs.NSGD(**kwargs)


def test_top_k_above_the_parameter_count_is_refused_at_build():
  opt = tfs.NSGD(top_k=DIM + 1)
  variables = [tf.Variable(np.zeros(s, np.float32)) for s in SHAPES]
  with pytest.raises(ValueError) as e:
    opt.build(variables)
  assert str(e.value) == (f"NSGD: top_k={DIM + 1} exceeds the {DIM} trainable "
                          f"parameters; top_k must be in [1, {DIM}]")
  full = tfs.NSGD(top_k=DIM)  # as many directions as parameters is fine
  full.build(variables)
  full.set_directions([_split(np.eye(DIM)[i]) for i in range(DIM)])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_directions_are_refused(bad):
  opt = tfs.NSGD(top_k=3)
  variables = [tf.Variable(np.zeros(s, np.float32)) for s in SHAPES]
  opt.build(variables)
  rng = np.random.default_rng(7)
  good = [_split(rng.standard_normal(DIM)) for _ in range(3)]
  opt.set_directions(good)
  before = opt.get_directions()
  broken = [list(d) for d in good]
  broken[2][1] = broken[2][1].copy()
  broken[2][1][3] = bad
  with pytest.raises(ValueError, match="direction 2 has 1 NaN or infinite "
                     "entries; directions must be finite"):
    opt.set_directions(broken)
  for a, b in zip(opt.get_directions(), before):  # nothing was stored
    for pa, pb in zip(a, b):
      np.testing.assert_array_equal(pa, pb)


def test_config_round_trip():
  opt = tfs.NSGD(learning_rate=0.02, gamma=0.1, top_k=3, complement=0.5,
                 momentum=0.9, nesterov=True, global_clipnorm=1.0)
  clone = tfs.NSGD.from_config(opt.get_config())
  for key in ("gamma", "top_k", "complement", "momentum", "nesterov",
              "global_clipnorm"):
    assert getattr(clone, key) == getattr(opt, key)
  assert keras.optimizers.deserialize(
      keras.optimizers.serialize(opt)).gamma == 0.1


def _tiny_model(seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                           keras.layers.Dense(3)])


def test_fit_with_refresh_saves_and_reloads(tmp_path):
  rng = np.random.default_rng(4)
  x = rng.standard_normal((96, 6)).astype(np.float32)
  y = rng.integers(0, 3, 96)
  model = _tiny_model()
  opt = tfs.NSGD(learning_rate=0.05, gamma=0.1, top_k=2)
  model.compile(optimizer=opt,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  refresh = NSGDRefresh((x[:32], y[:32]), every=3, num_iters=30)
  model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[refresh])
  assert refresh.num_refreshes == 4  # steps 0, 3, 6, 9 of 12
  dirs = opt.get_directions()
  flat = np.stack([_flat(d) for d in dirs])
  np.testing.assert_allclose(flat @ flat.T, np.eye(2), atol=1e-5)
  # The directions are top eigenvectors of the Hessian on the refresh data
  # at the last refresh; they are not zero and they survive a save/load.
  path = os.path.join(tmp_path, "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded.optimizer, tfs.NSGD)
  assert loaded.optimizer.gamma == 0.1
  for a, b in zip(loaded.optimizer.get_directions(), dirs):
    for pa, pb in zip(a, b):
      np.testing.assert_array_equal(pa, pb)


def test_refresh_gives_top_eigenvectors():
  rng = np.random.default_rng(5)
  x = rng.standard_normal((40, 6)).astype(np.float32)
  y = rng.integers(0, 3, 40)
  model = _tiny_model(1)
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  model.compile(optimizer=tfs.NSGD(learning_rate=0.0, top_k=2), loss=loss)
  model.fit(x, y, batch_size=40, epochs=1, verbose=0,
            callbacks=[NSGDRefresh((x, y), every="epoch", tol=1e-6)])
  op = tfs.HessianOperator(model, loss, (x, y))
  top = tfs.top_eigenpairs(op, k=2, tol=1e-6)
  got = np.stack([_flat(d) for d in model.optimizer.get_directions()])
  overlap = np.abs(got @ top.flat_eigenvectors().T)
  np.testing.assert_allclose(np.diag(overlap), [1, 1], atol=1e-3)


def test_mirrored_strategy_matches_one_device():
  rng = np.random.default_rng(6)
  x = rng.standard_normal((32, 6)).astype(np.float32)
  y = rng.integers(0, 3, 32)
  dirs = None
  finals = []
  for strategy in (tf.distribute.get_strategy(),
                   tf.distribute.MirroredStrategy(
      ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())):
    with strategy.scope():
      model = _tiny_model(2)
      opt = tfs.NSGD(learning_rate=0.1, gamma=0.1, top_k=2, momentum=0.9)
      model.compile(optimizer=opt,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      opt.build(model.trainable_variables)
    if dirs is None:
      dirs = [[rng.standard_normal(v.shape) for v in model.trainable_variables]
              for _ in range(2)]
    opt.set_directions(dirs)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    finals.append(_flat(model.get_weights()))
  np.testing.assert_allclose(finals[1], finals[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.1, 5.0])
def test_training_loop_step_lies_where_the_projection_puts_it(tmp_path, gamma):
  """End to end through training.train: after each refresh, the fraction of
  the parameter step inside the top-K span is gamma r / sqrt(1 - r^2 +
  gamma^2 r^2) (r the minibatch gradient's fraction), which differs from r
  only if the projection and gamma reach the update."""
  from tf_sharpness import training
  cfg = training.Config(
      logdir=str(tmp_path / f"g{gamma}"), dataset="cifar10_mini", train_size=200,
      model="fcn", depth=1, width=16, batch_size=50, steps=6, learning_rate=0.05,
      optimizer="nsgd", nsgd_gamma=gamma, nsgd_top_k=2, nsgd_refresh_every=2,
      spectrum_every=2, spectrum_k=2, spectrum_iters=30, hessian_size=40,
      log_every=1, eval_every=0)
  training.train(cfg)
  checks = [r["nsgd_step"] for r in training.read_metrics(cfg.logdir) if "nsgd_step" in r]
  assert len(checks) == 3
  for c in checks:
    r, measured = c["gradient_fraction"], c["step_fraction"]
    assert 0.05 < r < 0.999
    assert measured == pytest.approx(
        gamma * r / np.sqrt(1 - r**2 + gamma**2 * r**2), rel=1e-3)
    assert c["predicted_step_fraction"] == pytest.approx(measured, rel=1e-3)
    assert abs(measured - r) > 0.05  # the projection changed the step
