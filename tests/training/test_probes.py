"""Every probe on every model kind we ship, and the pieces the probes build
on: loss forms, filter-normalized directions of any rank, the random
control slice."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sharpness as tfs
from exact_hessian import exact_hessian, keras_dtype
from tf_sharpness import landscape, training


# ------------------------------------------------------------- loss forms


def float64_mlp(seed=0):
  keras.utils.set_random_seed(seed)
  with keras_dtype("float64"):
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(6, activation="tanh"),
                             keras.layers.Dense(3)])


@pytest.mark.parametrize("form", ["mean", "none", "sum", "lambda_per_example"])
@pytest.mark.parametrize("batch_size", [40, 7])
def test_every_loss_form_gives_the_mean_loss_hessian(tiny_cifar, form, batch_size):
  """Per-example losses and reduction='sum' measure the Hessian of the mean
  loss, whatever the chunk size (it used to come out times the batch)."""
  x, y = tiny_cifar
  x = x.reshape(len(x), -1)[:40, :12]
  y = y[:40] % 3
  model = float64_mlp()
  xent = lambda **kw: keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, dtype="float64", **kw)
  mean = xent()
  losses = {
      "mean": mean,
      "none": xent(reduction=None),
      "sum": xent(reduction="sum"),
      "lambda_per_example": lambda t, p: keras.losses.sparse_categorical_crossentropy(
          t, p, from_logits=True),
  }
  exact = np.linalg.eigvalsh(exact_hessian(model, mean, x, y))[::-1][:3]
  op = tfs.HessianOperator(model, losses[form], (x, y), batch_size=batch_size)
  top = tfs.top_eigenpairs(op, k=3, tol=1e-8).eigenvalues
  np.testing.assert_allclose(top, exact, rtol=1e-6)
  assert op.loss() == pytest.approx(float(mean(y, model(x))), rel=1e-10)


def test_a_loss_of_the_wrong_shape_is_refused(tiny_cifar):
  x, y = tiny_cifar
  model = float64_mlp()
  op_loss = lambda t, p: tf.reduce_sum(p, axis=0)  # one value per class
  with pytest.raises(ValueError, match="one value per example"):
    tfs.HessianOperator(model, op_loss, (x.reshape(64, -1)[:, :12], y % 3)).loss()


def test_empty_data_is_refused():
  model = float64_mlp()
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  with pytest.raises(ValueError, match="no examples"):
    tfs.HessianOperator(model, loss, (np.zeros((0, 12)), np.zeros((0,), np.int32)))


# ----------------------------------------------- filter-normalized direction


def test_filter_normalized_direction_for_kernels_of_any_rank():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((6, 6, 6, 2)), keras.layers.Conv3D(3, 2),           # rank-5 kernel
      keras.layers.Reshape((5 * 5 * 5, 3)), keras.layers.Conv1D(4, 3),  # rank 3
      keras.layers.Reshape((123, 4, 1)), keras.layers.Conv2D(2, 3),    # rank 4
      keras.layers.Flatten(), keras.layers.Dense(3)])                  # rank 2
  loss = keras.losses.MeanSquaredError()
  ev = tfs.LossEvaluator(model, loss, (np.zeros((2, 6, 6, 6, 2)), np.zeros((2, 3))))
  d = landscape.filter_normalized_direction(ev, seed=1)
  ranks = []
  for w, part in zip(model.trainable_variables, d):
    w = w.numpy().astype(np.float64)
    ranks.append(w.ndim)
    if w.ndim == 1:
      assert not part.any()  # biases are not perturbed
      continue
    filters = lambda a: np.sqrt((a.reshape(-1, a.shape[-1]) ** 2).sum(0))
    np.testing.assert_allclose(filters(part), filters(w), rtol=1e-9)
    assert not np.allclose(part, w)
  assert sorted(set(ranks)) == [1, 2, 3, 4, 5]


# ------------------------------------------------------- the random control


def test_control_slice_covers_the_distances_of_the_e1_slice(tiny_cifar):
  x, y = tiny_cifar
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                            keras.layers.Flatten(), keras.layers.Dense(10)])
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  ev = tfs.HessianOperator(model, loss, (x, y))
  top = tfs.top_eigenpairs(ev, k=1, tol=1e-4)
  batches = [(x[:16], y[:16]), (x[16:32], y[16:32])]
  mb = tfs.LossEvaluator(model, loss, batches[0])
  e1 = landscape.eigenvector_slices(ev, mb, batches, {"e1": top.eigenvectors[0]}, 0.1,
                                    (-4, -2, 0, 2, 4))[0]
  control = landscape.control_slice(ev, e1, seed=3)
  assert control.scale == e1.scale and list(control.alphas) == list(e1.alphas)
  # The same distances along a random unit direction: its own points.
  r = landscape.random_direction(ev, seed=3)
  expected = landscape.loss_along(ev, direction=r, alphas=e1.alphas, scale=e1.scale)
  np.testing.assert_allclose(control.losses, expected, rtol=1e-12)
  # Along e1 the curve rises like 0.5 lambda_1 d^2; the random one far less.
  d = 4 * e1.scale
  rise = e1.losses[[0, -1]].mean() - e1.losses[2]
  assert rise == pytest.approx(0.5 * top.eigenvalues[0] * d**2, rel=0.3)
  assert control.losses[[0, -1]].mean() - control.losses[2] < 0.5 * rise


# ------------------------------------------------- the probe x model matrix

MODELS = {
    "fcn": dict(model="fcn", depth=1, width=8),
    "cnn": dict(model="cnn", depth=2, width=4),
    "simple_cnn": dict(model="simple_cnn", filters=2),
    "resnet32_batchnorm": dict(model="resnet32", normalization="batchnorm"),
    "resnet32_none": dict(model="resnet32", normalization="none", init_scale=0.1),
}

ALL_PROBES = dict(
    spectrum_every=1, spectrum_k=2, spectrum_iters=8, spectrum_tol=0.05,
    smallest_every=2, smallest_k=1, density_every=2, density_runs=1, density_iters=4,
    trace_every=2, trace_samples=6, slice_every=2, slice_directions=(1, 2),
    slice_alphas=(-1.0, 0.0, 1.0), slice_2d_every=2, slice_2d_points=3,
    step_analysis_every=2, step_factors=(0.5, 1.0), walk_steps="0:2", walk_points=3,
    landscape_size=8, landscape_minibatches=1, optimizer="nsgd", nsgd_top_k=2,
    nsgd_gamma=0.5, nsgd_refresh_every=1, eval_every=2, eval_size=16)


def finite(values):
  return bool(np.all(np.isfinite(np.asarray(values, dtype=np.float64))))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_probe_on_every_model(tmp_path, kind):
  cfg = training.Config(logdir=str(tmp_path / kind), dataset="cifar10_mini",
                        train_size=40, batch_size=8, steps=2, hessian_size=8,
                        learning_rate=0.01, log_every=1, **MODELS[kind], **ALL_PROBES)
  training.train(cfg)
  records = {r["step"]: r for r in training.read_metrics(cfg.logdir)}
  assert sorted(records) == [0, 1, 2]
  first, second, last = records[0], records[1], records[2]
  for r in (first, second, last):  # top-k at every step, NSGD refreshed before steps
    assert len(r["top_eigenvalues"]) == 2 and finite(r["top_eigenvalues"])
  assert first["nsgd_refreshed"] and second["nsgd_refreshed"]
  assert len(second["principal_angles"]) == 2 and 0 <= second["gradient_overlap"] <= 1
  assert set(first["stability_thresholds"]) == {"2/(γη)", "2/(cη)"}
  assert len(first["smallest_eigenvalues"]) == 1 and finite(first["smallest_eigenvalues"])
  assert first["density_matvecs"] == 4 and finite(first["trace"])
  slices = first["slices"]
  assert set(slices) == {"e1", "e2", "random"}
  for s in slices.values():
    assert len(s["losses"]) == 3 and finite(s["losses"]) and s["scale"] > 0
  assert slices["random"]["scale"] == slices["e1"]["scale"]  # the same distances
  # Far corners of a surface may overflow (ResNet-32 with BatchNorm in inference
  # mode at initialization normalizes nothing): gaps, never a stopped run.
  assert finite([first["surface_e1_e2_min"], first["surface_filter_normalized_min"]])
  if kind != "resnet32_batchnorm":
    assert first["surface_nonfinite_points"] == 0
  analysis = first["step_analysis"]
  assert set(analysis) == {"e1", "e2", "random", "full step"}
  assert all(len(v) == 2 and finite(v) for v in analysis.values())
  e1 = first["step_e1_scaling"]
  assert e1["alphas"] == [0.0, 0.5, 1.0, 2.0] and finite(e1["full_step"] + e1["component_only"])
  assert len(e1["line_minimum"]) == 1 and 0 <= e1["line_minimum"][0] <= 2
  assert e1["overshoot_fraction"] == float(e1["line_minimum"][0] < 1)
  # alpha = 1 is the SGD step restricted to e1: the step analysis' e1 row at factor 1
  assert e1["component_only"][2] == pytest.approx(analysis["e1"][1], rel=1e-6, abs=1e-9)
  assert len(first["walk"]["losses"]) == 3 and finite(first["walk"]["losses"])
  assert second["walk"]["grad_cosine"] is not None
  assert finite([last["test_loss"], last["train_accuracy"]])
