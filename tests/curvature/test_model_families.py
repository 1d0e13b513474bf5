"""Any Keras model, measured exactly: the top-k that SpectrumCallback records
along model.fit, and H v on random vectors, against the dense Hessian
(central differences of exact gradients + eigh) of a float64 model of each
layer family; the finite-difference fallback, mixed
precision and the data forms; refusals in one line naming the layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sharpness as tfs
from exact_hessian import exact_hessian, keras_dtype
from model_families import FAMILIES, build
from tf_sharpness.errors import UnsupportedModelError

L = keras.layers


def exact_top(family, k=3, hessian=None):
  h = hessian if hessian is not None else exact_hessian(
      family.model, family.exact_loss, family.x, family.y, training=family.training)
  return np.linalg.eigvalsh(h)[::-1][:k]


def assert_products_match(family, hessian, loss=None, rtol=1e-6):
  """H v of a HessianOperator on three random vectors against the dense
  reference (loss: the compiled loss by default, as the callback takes it)."""
  loss = loss or tfs.CompiledLoss(family.model)
  op = tfs.HessianOperator(family.model, loss, (family.x, family.y),
                           training=family.training)
  rng = np.random.default_rng(7)
  for _ in range(3):
    v = rng.normal(size=op.dim)
    hv = tfs.flatten(op.matvec(tfs.unflatten(v, op.shapes))).numpy()
    err = np.linalg.norm(hv - hessian @ v) / np.linalg.norm(hessian @ v)
    assert err < rtol, err
  return op


def fit_and_measure(model, x, y, hessian_data, **kwargs):
  """Two SGD steps with the callback; returns its final record (measured
  at the parameters fit ends with)."""
  cb = tfs.SpectrumCallback(None, hessian_data, every=1, k=3, tol=1e-10,
                            num_iters=200, verbose=False, **kwargs)
  model.fit(x, y, batch_size=12, epochs=1, callbacks=[cb], verbose=0, shuffle=False)
  return cb.records[-1]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_matches_the_exact_hessian_through_the_callback(name):
  fam = build(name)
  rec = fit_and_measure(fam.model, fam.x, fam.y, (fam.x, fam.y), training=fam.training)
  assert rec["step"] == 2 and rec["final"]
  h = exact_hessian(fam.model, fam.exact_loss, fam.x, fam.y, training=fam.training)
  exact = exact_top(fam, hessian=h)
  assert_products_match(fam, h)
  print(f"{name}: largest relative error of the top-3 "
        f"{np.max(np.abs(np.array(rec['top_eigenvalues']) / exact - 1)):.1e}")
  np.testing.assert_allclose(rec["top_eigenvalues"], exact, rtol=1e-6)
  definition = rec["hessian_definition"]
  assert definition["batchnorm_mode"] == ("batch statistics" if fam.training
                                          else "moving statistics")
  assert definition["dropout"] == ("on" if fam.training else "off")
  assert definition["hvp_method"] in ("forward_over_reverse", "reverse_over_reverse")
  if name in ("lstm", "gru", "simple_rnn"):  # forward mode cannot enter while loops
    assert definition["hvp_method"] == "reverse_over_reverse"
  assert definition["fd_check"] in ("agrees", "off") or definition[
      "fd_check"].startswith("inconclusive")
  assert "fd_check_relative_error" in definition
  objective = {"multi_output": "with loss_weights {'label': 0.7, 'value': 0.3}",
               "list_outputs_loss_dict": "compiled loss {'cls': ",
               "list_outputs_mixed_labels": "with loss_weights [0.7, 0.3]",
               "compute_loss_override": "_HuberModel.compute_loss"}.get(name)
  assert (objective in definition["objective"]) if objective else "objective" not in definition


def test_the_two_batchnorm_modes_are_different_hessians():
  """Moving statistics (default) and batch statistics (training=True) give
  two operators, each recorded as such (the exact values are checked above)."""
  fam = build("batchnorm_moving")
  fam.model.layers[1].moving_variance.assign(np.full(5, 3.0))  # unlike the batch's
  tops = {}
  for training in (False, True):
    op = tfs.HessianOperator(fam.model, fam.exact_loss, (fam.x, fam.y), training=training)
    tops[training] = tfs.top_eigenpairs(op, k=2, tol=1e-8).eigenvalues
    assert op.hessian_definition()["batchnorm_mode"] == (
        "batch statistics" if training else "moving statistics")
  assert np.max(np.abs(tops[False] / tops[True] - 1)) > 1e-2


def test_embedding_gradients_are_not_dropped():
  """IndexedSlices gradients are densified: the Embedding block of H v is
  the exact one, not zeros."""
  fam = build("embedding")
  op = tfs.HessianOperator(fam.model, fam.exact_loss, (fam.x, fam.y))
  h = exact_hessian(fam.model, fam.exact_loss, fam.x, fam.y)
  v = np.random.default_rng(1).normal(size=op.dim)
  hv = tfs.flatten(op.matvec(tfs.unflatten(v, op.shapes))).numpy()
  np.testing.assert_allclose(hv, h @ v, rtol=1e-9, atol=1e-12)
  assert np.abs(hv[:12 * 4]).max() > 1e-3  # the embedding table's rows


@pytest.mark.parametrize("form", ["dataset", "generator"])
def test_datasets_and_generators_as_hessian_data(form):
  fam = build("embedding")
  batches = [(fam.x[i:i + 10], fam.y[i:i + 10]) for i in range(0, len(fam.y), 10)]
  data = (tf.data.Dataset.from_tensor_slices((fam.x, fam.y)).batch(10)
          if form == "dataset" else (b for b in batches))
  rec = fit_and_measure(fam.model, fam.x, fam.y, data)
  np.testing.assert_allclose(rec["top_eigenvalues"], exact_top(fam), rtol=1e-6)


def _no_gradient(fn, t):
  """fn(t) as an op without a gradient of its own: asking for one raises
  LookupError, as TensorFlow does for an op with no registered gradient."""
  @tf.custom_gradient
  def op(t):
    out = fn(t)
    def grad(dy):
      raise LookupError(f"No gradient defined for operation '{out.op.name}' "
                        f"(op type: {out.op.type})")
    return out, grad
  return op(t)


class _SinOnce(L.Layer):
  """sin(x) whose gradient cos(x) has no gradient: a first derivative but
  no second."""

  def call(self, x):
    @tf.custom_gradient
    def sin(t):
      return tf.sin(t), lambda dy: dy * _no_gradient(tf.cos, t)
    return sin(x)


def _sine_model(layer, **kw):
  keras.utils.set_random_seed(3)
  with keras_dtype("float64"):
    return keras.Sequential([keras.Input((6,)), L.Dense(5), layer(**kw), L.Dense(3)])


def test_an_op_without_second_derivative_falls_back_to_finite_differences(caplog):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(24, 6)), rng.integers(0, 3, 24)
  model = _sine_model(_SinOnce)
  reference = _sine_model(L.Activation, activation=tf.sin)  # the same function, tf.sin
  loss = lambda t, p: tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      tf.cast(t, tf.int32), p))
  with caplog.at_level("WARNING", logger="tf_sharpness"):
    op = tfs.HessianOperator(model, loss, (x, y))
    top = tfs.top_eigenpairs(op, k=3, tol=1e-8).eigenvalues
  exact = np.linalg.eigvalsh(exact_hessian(reference, loss, x, y))[::-1][:3]
  print(f"finite differences: largest relative error of the top-3 "
        f"{np.max(np.abs(top / exact - 1)):.1e}")
  np.testing.assert_allclose(top, exact, rtol=1e-3)
  definition = op.hessian_definition()
  assert definition["hvp_method"] == "finite_difference"
  assert 0 < definition["hvp_fd_relative_error"] < 1e-3
  assert any("finite differences" in r.getMessage() for r in caplog.records)
  assert any("using finite_difference" in r.getMessage() for r in caplog.records)


class _NoGradient(L.Layer):
  def call(self, x):
    return _no_gradient(tf.tanh, x)


def test_a_layer_without_any_gradient_is_refused_by_name():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(8, 6)), rng.integers(0, 3, 8)
  model = _sine_model(_NoGradient, name="opaque")
  op = tfs.HessianOperator(model, keras.losses.SparseCategoricalCrossentropy(
      from_logits=True), (x, y))
  with pytest.raises(UnsupportedModelError, match="layer 'opaque'") as err:
    tfs.top_eigenpairs(op, k=1)
  assert "\n" not in str(err.value)


def test_mixed_float16_against_the_same_model_in_float32():
  """HVPs on the float32 master weights with float16 compute; within 1e-2
  of the float32 model with the same weights (measured: ~1e-4)."""
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)

  def model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), L.Dense(16, activation="tanh"),
                             L.Dense(3, dtype="float32")])
  full = model()
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    mixed = model()
  finally:
    keras.mixed_precision.set_global_policy("float32")
  for a, b in zip(mixed.trainable_variables, full.trainable_variables):
    a.assign(b)
  mixed.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(
      from_logits=True))
  rec = fit_and_measure(mixed, x, y, (x, y))
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  reference = tfs.top_eigenpairs(tfs.HessianOperator(full, loss, (x, y)), k=3,
                                 tol=1e-8).eigenvalues
  print(f"mixed_float16: largest relative error of the top-3 against float32 "
        f"{np.max(np.abs(np.array(rec['top_eigenvalues']) / reference - 1)):.1e}")
  np.testing.assert_allclose(rec["top_eigenvalues"], reference, rtol=1e-2)
  assert rec["hessian_definition"]["compute_dtype"].startswith("float16")
  assert rec["stability_thresholds"] == {}  # learning rate 0: no threshold


def test_sample_weights_and_random_layers_in_training_mode_are_refused():
  fam = build("dropout")
  with pytest.raises(ValueError, match=r"\(x, y, sample_weight\) is not supported"):
    tfs.HessianOperator(fam.model, fam.exact_loss, (fam.x, fam.y, np.ones(len(fam.y))))
  with pytest.raises(ValueError, match="layer 'dropout.*Dropout.*training=False"):
    tfs.HessianOperator(fam.model, fam.exact_loss, (fam.x, fam.y), training=True)


def test_readme_own_model_example_runs(tmp_path, monkeypatch, capsys):
  """The README's "Your own model" block, as written (in this process)."""
  import os
  import re
  from conftest import REPO
  text = open(os.path.join(REPO, "README.md")).read()
  code = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
          if b.startswith("# tf-sharpness on your own model")]
  assert len(code) == 1
  monkeypatch.chdir(tmp_path)
  exec(compile(code[0], "README.md", "exec"), {})
  out = capsys.readouterr().out
  assert re.search(r"lambda_max: \d", out)
  for layer in ("embedding", "multi_head_attention", "layer_normalization", "dense"):
    assert re.search(rf"^{layer}: block lambda_max [\d.e+-]+, share of e1 [01]\.\d\d$",
                     out, flags=re.M), out
  assert os.path.isdir(tmp_path / "logs" / "own" / "spectrum")


def test_errors_that_are_not_about_second_derivatives_are_not_rewrapped():
  """A user's loss bug surfaces as itself (no fallback, no refusal of the
  model); the GGN refuses a compiled multi-output loss naming loss_fn."""
  fam = build("dropout")
  bad = lambda t, p: tf.reduce_sum(p, axis=0)  # one value per class
  op = tfs.HessianOperator(fam.model, bad, (fam.x, fam.y))
  with pytest.raises(ValueError, match="one value per example") as err:
    op.matvec([np.zeros(s) for s in op.shapes])
  assert not isinstance(err.value, UnsupportedModelError)
  multi = build("multi_output")
  with pytest.raises(ValueError, match="loss_fn: the GGN needs a loss of the outputs"):
    tfs.GaussNewtonOperator(multi.model, tfs.CompiledLoss(multi.model), (multi.x, multi.y))
  with pytest.raises(ValueError, match="include_regularization=False"):
    tfs.HessianOperator(multi.model, tfs.CompiledLoss(multi.model), (multi.x, multi.y),
                        include_regularization=False)
