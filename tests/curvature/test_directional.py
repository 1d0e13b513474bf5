"""Curvature along a direction against closed forms: on a linear model with
0.5 ||f - y||^2 the loss is exactly quadratic (H = A, built here by hand
from the inputs), so directional curvature, batch sharpness and critical
sharpness are known; the gradient of the sharpness against a central
difference of u^T H u on a small float64 tanh network (the cubic term)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sharpness as tfs
from exact_hessian import keras_dtype
from tf_sharpness import directional as D
from tf_sharpness.curvature import blocks as blocks_lib, vectors

L = keras.layers


def half_mse(y, p):
  return 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(p - y), axis=-1))


def linear(seed=0, n=40, d=4, k=2):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) * np.array([2.0, 1.0, 0.6, 0.3])[:d]
  y = rng.normal(size=(n, k))
  with keras_dtype("float64"):
    model = keras.Sequential([keras.Input((d,)), L.Dense(k)])
  model.layers[0].bias.assign(rng.normal(size=k))
  return model, x, y


def hessian_of_linear(x, k):
  """A for theta = (kernel [d, k] row-major, bias [k]): per output o the
  block (1/N) sum [x;1][x;1]^T, interleaved as the flat layout has it."""
  n, d = x.shape
  a = np.hstack([x, np.ones((n, 1))])
  c = a.T @ a / n  # [(d+1), (d+1)]
  p = (d + 1) * k
  h = np.zeros((p, p))
  index = lambda i, o: i * k + o if i < d else d * k + o  # kernel[i, o], bias[o]
  for o in range(k):
    for i in range(d + 1):
      for j in range(d + 1):
        h[index(i, o), index(j, o)] = c[i, j]
  return h


def test_directional_curvature_is_dT_A_d_over_dTd():
  model, x, y = linear()
  a = hessian_of_linear(x, 2)
  rng = np.random.default_rng(1)
  d = rng.normal(size=a.shape[0])
  res = D.directional_curvature(model, half_mse, (x, y), direction=d)
  assert res.num_matvecs == 1
  np.testing.assert_allclose(res.value, d @ a @ d / (d @ d), rtol=1e-10)
  blocks = blocks_lib.variable_blocks(model, "layer")
  per = D.directional_curvature(model, half_mse, (x, y), direction=d, blocks=blocks)
  (name, value), = per.blocks.items()
  np.testing.assert_allclose(value, res.value, rtol=1e-10)  # one layer: the whole
  with pytest.raises(ValueError, match="direction has"):
    D.directional_curvature(model, half_mse, (x, y), direction=d[:-1])


def test_batch_sharpness_from_per_batch_matrices():
  model, x, y = linear()
  op = tfs.HessianOperator(model, half_mse, (x, y))
  theta = op.parameters()
  batches = [(x[i:i + 10], y[i:i + 10]) for i in range(0, 40, 10)]
  expected = []
  for bx, by in batches:
    a = hessian_of_linear(bx, 2)
    ev = tfs.LossEvaluator(model, half_mse, (bx, by))
    g = vectors.to_numpy(ev.gradient())
    np.testing.assert_allclose(g, a @ theta - _linear_rhs(bx, by), rtol=1e-9, atol=1e-12)
    expected.append(g @ a @ g / (g @ g))
  res = D.batch_sharpness(model, half_mse, batches)
  np.testing.assert_allclose(res.samples, expected, rtol=1e-10)
  np.testing.assert_allclose(res.value, np.mean(expected), rtol=1e-10)
  np.testing.assert_allclose(res.stderr, np.std(expected, ddof=1) / 2, rtol=1e-9)


def _linear_rhs(x, y):
  """b with grad L = A theta - b for the flat layout of hessian_of_linear."""
  n, d = x.shape
  a = np.hstack([x, np.ones((n, 1))])
  c = a.T @ y / n  # [(d+1), k]
  k = y.shape[1]
  out = np.zeros((d + 1) * k)
  for o in range(k):
    for i in range(d + 1):
      out[(i * k + o) if i < d else d * k + o] = c[i, o]
  return out


def test_critical_sharpness_of_a_quadratic():
  """Along the gradient lambda_c = g^T A g / g^T g (the directional
  curvature); along another descent direction d, d^T A d / d^T g."""
  model, x, y = linear()
  a = hessian_of_linear(x, 2)
  op = tfs.HessianOperator(model, half_mse, (x, y))
  g = vectors.to_numpy(op.gradient())
  res = D.critical_sharpness(direction=g, evaluator=op, rtol=1e-9)
  np.testing.assert_allclose(res.lambda_c, g @ a @ g / (g @ g), rtol=1e-6)
  np.testing.assert_allclose(res.lambda_c, D.directional_curvature(
      direction=g, evaluator=op).value, rtol=1e-6)
  assert res.num_losses < 80
  d = g + 0.3 * np.random.default_rng(2).normal(size=g.size) * np.linalg.norm(g)
  assert d @ g > 0
  res = D.critical_sharpness(direction=d, evaluator=op, rtol=1e-9, initial_step=10.0)
  np.testing.assert_allclose(res.lambda_c, d @ a @ d / (d @ g), rtol=1e-6)
  up = D.critical_sharpness(direction=-g, evaluator=op)  # an ascent direction
  assert up.eta_c is None and up.lambda_c == np.inf
  # From another point theta' (origin), without writing the weights: the
  # slope is that of g(theta') = g + A (theta' - theta)
  theta = op.parameters()
  shifted = theta - 0.5 * g / np.linalg.norm(g)
  g_there = g + a @ (shifted - theta)
  assert d @ g_there > 0
  res = D.critical_sharpness(direction=d, evaluator=op, rtol=1e-9, initial_step=10.0,
                             origin=shifted)
  np.testing.assert_allclose(res.lambda_c, d @ a @ d / (d @ g_there), rtol=1e-6)
  np.testing.assert_array_equal(op.parameters(), theta)  # the model is left as it was
  # a direction that descends at theta but not at the origin: infinite there
  e = g_there / np.linalg.norm(g_there)
  flip = g - 1.01 * (g @ e) * e if g @ e > 0 else None
  if flip is not None and flip @ g > 0 and flip @ g_there < 0:
    assert D.critical_sharpness(direction=flip, evaluator=op).lambda_c < np.inf
    assert D.critical_sharpness(direction=flip, evaluator=op,
                                origin=shifted).lambda_c == np.inf
  else:
    raise AssertionError("the test's direction does not separate the two points")


def test_critical_sharpness_in_float32_is_not_fooled_by_rounding():
  """float32: along an ascent direction the loss never falls by more than
  its rounding, so lambda_c is infinite (before, a step too small to move
  the weights counted as a descent and gave lambda_c ~ 1e8); along the
  gradient the value is the float64 one to float32 accuracy."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 5)).astype("float32")
  y = rng.integers(0, 3, 64)
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((5,)), L.Dense(8, activation="tanh"), L.Dense(3)])
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  op = tfs.HessianOperator(model, loss, (x, y))
  g = vectors.to_numpy(op.gradient()).astype(np.float64)
  up = D.critical_sharpness(direction=-g, evaluator=op)
  assert up.eta_c is None and up.lambda_c == np.inf, up
  down = D.critical_sharpness(direction=g, evaluator=op, rtol=1e-4)
  curvature = D.directional_curvature(direction=g, evaluator=op).value
  assert 0 < down.lambda_c < 10 * abs(curvature) + 10, (down, curvature)
  # A descent direction so short that the first step's fall is below the
  # loss's rounding: the steps double until it shows; lambda_c scales as d.
  tiny = D.critical_sharpness(direction=1e-4 * g, evaluator=op, rtol=1e-4)
  np.testing.assert_allclose(tiny.lambda_c, 1e-4 * down.lambda_c, rtol=1e-2)


def _tanh_mlp(rng):
  x, y = rng.normal(size=(32, 3)), rng.integers(0, 2, 32)
  model = keras.Sequential([keras.Input((3,)), L.Dense(4, activation="tanh"), L.Dense(2)])
  return model, x, y


def _tanh_cnn(rng):
  """Convolution and average pooling: the third derivative through conv
  ops (which forward-over-forward-over-reverse cannot take in TF)."""
  x, y = rng.normal(size=(12, 5, 5, 2)), rng.integers(0, 2, 12)
  model = keras.Sequential([keras.Input((5, 5, 2)), L.Conv2D(2, 3, activation="tanh"),
                            L.AveragePooling2D(2), L.Flatten(), L.Dense(2)])
  return model, x, y


@pytest.mark.parametrize("build", [_tanh_mlp, _tanh_cnn], ids=["mlp", "cnn"])
def test_sharpness_gradient_is_the_derivative_of_uT_H_u(build):
  """Against a central difference of u^T H(theta +- h e_i) u, coordinate by
  coordinate, on float64 tanh networks (where the third derivative is not
  zero), with u the top eigenvector: grad lambda_1."""
  rng = np.random.default_rng(0)
  with keras_dtype("float64"):
    keras.utils.set_random_seed(0)
    model, x, y = build(rng)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  op = tfs.HessianOperator(model, loss, (x, y))
  top = tfs.top_eigenpairs(op, k=1, tol=1e-12)
  u = vectors.to_numpy(top.eigenvectors[0])
  res = D.sharpness_gradient(u=top.eigenvectors[0], evaluator=op)
  np.testing.assert_allclose(res.value, top.eigenvalues[0], rtol=1e-8)
  theta = op.parameters()
  quad = lambda t: float(u @ vectors.to_numpy(op.matvec(
      vectors.split_numpy(u, op.shapes)))) if t is None else None
  numeric = np.zeros_like(theta)
  h = 1e-4
  for i in range(theta.size):
    values = []
    for s in (h, -h):
      shifted = theta.copy()
      shifted[i] += s
      for var, part in zip(model.trainable_variables, vectors.split_numpy(shifted, op.shapes)):
        var.assign(part)
      values.append(quad(None))
    numeric[i] = (values[0] - values[1]) / (2 * h)
  for var, part in zip(model.trainable_variables, vectors.split_numpy(theta, op.shapes)):
    var.assign(part)
  got = vectors.to_numpy(res.gradient)
  assert np.linalg.norm(numeric) > 1e-3  # the cubic term is there
  np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-7 * np.abs(numeric).max())
  g = vectors.to_numpy(op.gradient())
  np.testing.assert_allclose(res.cosine_with_loss_gradient,
                             g @ got / np.linalg.norm(g) / np.linalg.norm(got), rtol=1e-9)
  np.testing.assert_allclose(res.inner_with_loss_gradient, g @ numeric, rtol=1e-5)
  g_perp = g - (u @ g) * u / (u @ u)
  np.testing.assert_allclose(res.cosine_without_u, g_perp @ numeric / np.linalg.norm(g_perp)
                             / np.linalg.norm(numeric), rtol=1e-5)
  np.testing.assert_allclose(res.u_dot_loss_gradient, u @ g / np.linalg.norm(u), rtol=1e-9)
  np.testing.assert_allclose(res.loss_gradient_norm, np.linalg.norm(g), rtol=1e-12)


def test_lambda_max_interval_covers_the_full_data_value():
  """A linear model with 0.5 ||f - y||^2: the full-data Hessian of 4,000
  examples is known exactly; the interval from a sample of 200 contains its
  lambda_max in at least 18 of 20 random samples at confidence 0.9, and its
  width shrinks with the sample size."""
  from tf_sharpness.subsample import lambda_max_interval
  rng = np.random.default_rng(5)
  n_full = 4000
  x = rng.normal(size=(n_full, 4)) * np.array([2.0, 1.0, 0.6, 0.3])
  x[:, 0] *= rng.choice([0.5, 2.0], size=n_full)  # heavier tails than normal
  y = rng.normal(size=(n_full, 2))
  with keras_dtype("float64"):
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
  full = np.linalg.eigvalsh(hessian_of_linear(x, 2))[-1]
  covered, widths = 0, {}
  for trial in range(20):
    idx = np.random.default_rng(100 + trial).choice(n_full, 200, replace=False)
    res = lambda_max_interval(model, half_mse, (x[idx], y[idx]), confidence=0.9,
                              seed=trial)
    assert res.lower <= res.plug_in <= res.upper
    covered += res.lower <= full <= res.upper
    widths.setdefault(200, []).append(res.width)
  assert covered >= 18, covered
  for trial in range(5):
    idx = np.random.default_rng(200 + trial).choice(n_full, 800, replace=False)
    widths.setdefault(800, []).append(lambda_max_interval(
        model, half_mse, (x[idx], y[idx]), seed=trial).width)
  ratio = np.mean(widths[200]) / np.mean(widths[800])
  assert 1.4 < ratio < 3.0, ratio  # ~2 for a 1/sqrt(n) width
  assert res.examples_for(0.01) > res.examples


def test_directional_probe_in_fit_matches_the_quadratic():
  """Full-batch SGD on the quadratic with the probe every 2 steps: the
  update is -eta g_t, so c(update) = g_t^T A g_t / g_t^T g_t (A constant),
  and the critical sharpness of the step, from theta_t along -g_t, is
  g_t^T A g_t / g_t^T g_t as well (lambda_c = d^T A d / d^T g)."""
  model, x, y = linear()
  a = hessian_of_linear(x, 2)
  lr = 0.05
  model.compile(optimizer=keras.optimizers.SGD(lr), loss=half_mse)
  probe = tfs.probes.DirectionalProbe(tfs.probes.Schedule(every=2))
  thetas = []

  class Keep(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
      thetas.append(tfs.LossEvaluator(model, half_mse, (x, y)).parameters())

    def on_train_end(self, logs=None):
      self.on_train_batch_begin(None)

  cb = tfs.SpectrumCallback(None, (x, y), every=0, k=1, probes=[probe], verbose=False)
  model.fit(x, y, batch_size=40, epochs=5, shuffle=False, verbose=0, callbacks=[Keep(), cb])
  recs = [r for r in cb.records if "directional" in r]
  assert [r["step"] for r in recs] == [0, 2, 4]
  for rec in recs:
    t = rec["step"]
    g_t = a @ thetas[t] - _linear_rhs(x, y)
    g_next = a @ thetas[t + 1] - _linear_rhs(x, y)
    values = rec["directional"]
    np.testing.assert_allclose(values["gradient"], g_t @ a @ g_t / (g_t @ g_t), rtol=1e-8)
    np.testing.assert_allclose(values["update"], g_t @ a @ g_t / (g_t @ g_t), rtol=1e-6)
    np.testing.assert_allclose(values["critical_update"], g_t @ a @ g_t / (g_t @ g_t),
                               rtol=2e-2)
    # from theta_{t+1} it would be g_t^T A g_t / g_t^T g_{t+1}: told apart here
    assert abs(g_t @ g_next - g_t @ g_t) > 0.05 * (g_t @ g_t)
    assert values["threshold_2_over_eta"] == pytest.approx(2 / lr)


def test_loop_records_the_interval_and_the_directional_curvature(tmp_path):
  """--lambda_interval_every and --directional_every in our loop: the
  interval's plug-in is the spectrum's lambda_max on the same data and
  step, its upper bound sits above it; both write the Spectrum tab's
  summaries (kinds lambda_interval and directional)."""
  from tf_sharpness import training
  from tb_plugin import metadata
  logdir = str(tmp_path / "run")
  cfg = training.Config(dataset="cifar10_mini", train_size=200, model="fcn", depth=1,
                        width=16, batch_size=50, steps=4, spectrum_every=2, spectrum_k=2,
                        spectrum_iters=30, spectrum_tol=1e-6, hessian_size=64,
                        eval_every=0, learning_rate=0.05, deterministic=True,
                        directional_every=2, lambda_interval_every=2,
                        lambda_interval_batches=8, logdir=logdir)
  training.train(cfg)
  records = [r for r in training.read_metrics(logdir) if "lambda_max_interval" in r]
  assert [r["step"] for r in records] == [0, 2, 4]
  for r in records:
    iv = r["lambda_max_interval"]
    assert iv["plug_in"] == pytest.approx(r["top_eigenvalues"][0], rel=1e-4)
    assert iv["lower"] < iv["upper"] and iv["upper"] >= iv["plug_in"]
    assert (iv["examples"], iv["batches"], iv["confidence"]) == (64, 8, 0.9)
  kinds = {}
  for path in tf.io.gfile.glob(f"{logdir}/events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME:
          kinds[v.tag] = metadata.parse_plugin_content(v.metadata.plugin_data.content)["kind"]
  assert kinds["hessian/lambda_max_interval"] == "lambda_interval"
  assert kinds["directional/curvature"] == "directional"


@pytest.mark.parametrize("overrides,message", [
    (dict(lambda_interval_batches=7), "`lambda_interval_batches` must be even"),
    (dict(lambda_interval_batches=2), "`lambda_interval_batches` must be >= 4"),
    (dict(lambda_interval_confidence=1.0), "`lambda_interval_confidence` must be in"),
])
def test_bad_interval_settings_name_the_setting(overrides, message):
  from tf_sharpness import training
  with pytest.raises(ValueError, match=message):
    training.Config(**overrides).validate()


def test_batch_sharpness_and_self_stabilization_in_fit():
  """The probe's batch sharpness on the quadratic: the mean over the
  step's landscape minibatches B of g_B^T A_B g_B / g_B^T g_B at theta_t
  (A_B, g_B built by hand from B); and grad lambda_1 of a quadratic is 0
  (the third derivative vanishes)."""
  model, x, y = linear()
  lr = 0.05
  model.compile(optimizer=keras.optimizers.SGD(lr), loss=half_mse)
  probe = tfs.probes.DirectionalProbe(tfs.probes.Schedule(every=2),
                                      quantities=("batch", "self_stabilization"))
  thetas = []

  class Keep(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
      thetas.append(tfs.LossEvaluator(model, half_mse, (x, y)).parameters())

  cb = tfs.SpectrumCallback(None, (x, y), every=2, k=1, probes=[probe], verbose=False,
                            landscape_data=(x, y), landscape_size=40,
                            landscape_batch_size=10, landscape_minibatches=3)
  model.fit(x, y, batch_size=40, epochs=3, shuffle=False, verbose=0, callbacks=[Keep(), cb])
  recs = [r for r in cb.records if "directional" in r]
  assert [r["step"] for r in recs] == [0, 2]
  for rec in recs:
    theta = thetas[rec["step"]]
    expected = []
    for xb, yb in cb.context.landscape.minibatches(rec["step"]):
      a = hessian_of_linear(xb, 2)
      g = a @ theta - _linear_rhs(xb, yb)
      expected.append(g @ a @ g / (g @ g))
    values = rec["directional"]
    np.testing.assert_allclose(values["batch"], np.mean(expected), rtol=1e-8)
    np.testing.assert_allclose(values["batch_stderr"],
                               np.std(expected, ddof=1) / np.sqrt(3), rtol=1e-6)
    assert values["self_stabilization"]["norm"] < 1e-8
    assert "gradient" not in values and "update" not in values
  with pytest.raises(ValueError, match="quantities must be some of"):
    tfs.probes.DirectionalProbe(tfs.probes.Schedule(every=1), quantities=("sharpest",))


def test_update_curvature_in_fit_on_an_attention_model_against_differences():
  """The probe's curvature along the update, in ``fit`` on Embedding +
  MultiHeadAttention + LayerNormalization (float64), against d^T H d / d^T d
  with H d from central differences of exact gradients at theta_{t+1}."""
  rng = np.random.default_rng(0)
  n, steps, vocab = 32, 6, 20
  x = rng.integers(0, vocab, (n, steps)).astype("int32")
  y = rng.integers(0, 3, n)
  with keras_dtype("float64"):
    keras.utils.set_random_seed(0)
    inp = keras.Input((steps,), dtype="int32")
    h = L.Embedding(vocab, 8)(inp)
    h = L.LayerNormalization()(h + L.MultiHeadAttention(2, 4)(h, h))
    model = keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling1D()(h)))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    thetas = []

    class Keep(keras.callbacks.Callback):
      def on_train_batch_begin(self, batch, logs=None):
        thetas.append(vectors.to_numpy([v.numpy() for v in self.model.trainable_variables]))

      def on_train_end(self, logs=None):
        self.on_train_batch_begin(None)

    cb = tfs.SpectrumCallback(None, (x, y), every=0, k=1, verbose=False,
                              probes=[tfs.probes.DirectionalProbe(tfs.probes.Schedule(every=2))])
    model.fit(x, y, batch_size=n, epochs=4, shuffle=False, verbose=0, callbacks=[Keep(), cb])
    ev = tfs.LossEvaluator(model, loss, (x, y))
    shapes = [v.shape for v in model.trainable_variables]
    recs = [r for r in cb.records if "directional" in r]
    assert [r["step"] for r in recs] == [0, 2]
    for rec in recs:
      t = rec["step"]
      d = thetas[t + 1] - thetas[t]
      eps = 1e-5 / np.linalg.norm(d)
      grad = lambda th: vectors.to_numpy(ev.loss_and_gradient_at(
          vectors.split_numpy(th, shapes))[1])
      hd = (grad(thetas[t + 1] + eps * d) - grad(thetas[t + 1] - eps * d)) / (2 * eps)
      np.testing.assert_allclose(rec["directional"]["update"], d @ hd / (d @ d), rtol=1e-6)
