"""Data pipeline (on the shared CIFAR-10 archive and the embedded subset) and
the model zoo."""

import numpy as np
import pytest
import tensorflow as tf

from tf_sharpness import data, models

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                 "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar(shared_cifar_path):
  return data.load(shared_cifar_path)


def test_shared_archive_shapes_and_label_order(cifar):
  assert cifar.train_x.shape == (50000, 32, 32, 3)
  assert cifar.test_x.shape == (10000, 32, 32, 3)
  assert cifar.train_x.dtype == np.uint8
  assert cifar.class_names == CIFAR_CLASSES
  np.testing.assert_array_equal(np.bincount(cifar.train_y), [5000] * 10)
  np.testing.assert_array_equal(np.bincount(cifar.test_y), [1000] * 10)
  # Label order is the class order: airplanes (0) are mostly sky-blue,
  # frogs (6) mostly green-brown -- a check that labels follow the images.
  blue = lambda c: (cifar.train_x[cifar.train_y == c][..., 2].mean() -
                    cifar.train_x[cifar.train_y == c][..., 0].mean())
  assert blue(0) > blue(6) + 10


def test_embedded_subset_is_real_cifar(cifar, mini_raw):
  assert mini_raw.train_x.shape == (5000, 32, 32, 3)
  assert mini_raw.test_x.shape == (1000, 32, 32, 3)
  assert mini_raw.class_names == CIFAR_CLASSES
  # The first 500 files of each class are the first 500 images of each class.
  for c in (0, 9):
    np.testing.assert_array_equal(mini_raw.train_x[mini_raw.train_y == c][:5],
                                  cifar.train_x[cifar.train_y == c][:5])


def test_prepare_splits_and_standardization(cifar):
  prep = data.prepare(cifar, train_size=4500, validation_size=5000, seed=3)
  assert prep.train_x.shape == (4500, 32, 32, 3)
  assert prep.val_x.shape == (5000, 32, 32, 3)
  np.testing.assert_array_equal(np.bincount(prep.train_y), [450] * 10)
  np.testing.assert_array_equal(np.bincount(prep.val_y), [500] * 10)
  np.testing.assert_allclose(prep.train_x.mean(axis=(0, 1, 2), dtype=np.float64), 0, atol=1e-4)
  np.testing.assert_allclose(prep.train_x.std(axis=(0, 1, 2), dtype=np.float64), 1, atol=1e-4)
  # Test data is standardized with the training statistics, not its own.
  assert np.abs(prep.test_x.mean(axis=(0, 1, 2))).max() < 0.1
  pp = data.prepare(cifar, train_size=1000, standardize="per_pixel", seed=0)
  np.testing.assert_allclose(pp.train_x.mean(axis=0), 0, atol=1e-4)
  assert pp.train_x.std(dtype=np.float64) == pytest.approx(1.0, abs=1e-4)


def test_subsets_are_seeded_and_balanced():
  labels = np.repeat(np.arange(10), 100)
  a = data.balanced_subset(labels, 95, seed=1)
  b = data.balanced_subset(labels, 95, seed=1)
  c = data.balanced_subset(labels, 95, seed=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  counts = np.bincount(labels[a], minlength=10)
  assert counts.sum() == 95 and counts.max() - counts.min() <= 1
  h = data.hessian_subset(45000, 0.05, seed=0)
  assert len(h) == 2250 and len(np.unique(h)) == 2250
  with pytest.raises(ValueError, match="--hessian_fraction"):
    data.hessian_subset(100, 0.0)


def test_augment_shifts_and_flips():
  x = tf.reshape(tf.range(2 * 8 * 8 * 1, dtype=tf.float32), (2, 8, 8, 1)) + 1
  out = data.augment(x, tf.constant([1, 2], tf.int64))
  assert out.shape == x.shape
  again = data.augment(x, tf.constant([1, 2], tf.int64))
  np.testing.assert_array_equal(out.numpy(), again.numpy())
  # Every output is a shifted (zero-padded), maybe flipped copy of its input.
  for i in range(2):
    src, dst = x[i, ..., 0].numpy(), out[i, ..., 0].numpy()
    candidates = []
    for flip in (False, True):
      s = src[:, ::-1] if flip else src
      padded = np.pad(s, 4)
      for r in range(9):
        for c in range(9):
          candidates.append(np.array_equal(padded[r:r + 8, c:c + 8], dst))
    assert any(candidates)


def test_missing_and_bad_datasets(tmp_path):
  with pytest.raises(data.DatasetError, match="no such file"):
    data.load(str(tmp_path / "missing.tar.gz"))
  with pytest.raises(data.DatasetError, match="is not known"):
    data.load("cifar11")
  (tmp_path / "root" / "train" / "cat").mkdir(parents=True)
  with pytest.raises(data.DatasetError, match="has no test/ folder"):
    data.load(str(tmp_path / "root"))
  (tmp_path / "root" / "test" / "cat").mkdir(parents=True)
  with pytest.raises(data.DatasetError, match="no 'train/<class>/\\*.jpg' images"):
    data.load(str(tmp_path / "root"))


def test_tfds_offline_error_says_what_to_do(tmp_path):
  with pytest.raises(data.DatasetError, match="cifar10_mini"):
    data.load("mnist", data_dir=str(tmp_path / "empty"))


@pytest.mark.parametrize("kwargs,count", [
    (dict(filters=32, kernel_size=3), 361_898),
    (dict(filters=100, kernel_size=5), 2_399_518)])
def test_simple_cnn_parameter_counts(kwargs, count):
  assert models.simple_cnn((32, 32, 3), 10, **kwargs).count_params() == count


def test_resnet32_structure():
  m = models.resnet32((32, 32, 3), 10)
  convs = [l for l in m.layers if l.__class__.__name__ == "Conv2D"]
  # 1 stem + 30 block convs + 2 projection shortcuts; + 1 dense = 32 layers
  # on the main path.
  assert len([c for c in convs if c.kernel_size == (3, 3)]) == 31
  assert len([c for c in convs if c.kernel_size == (1, 1)]) == 2
  assert m(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 10)
  plain = models.resnet32((32, 32, 3), 10, normalization="none",
                          init_scale=1 / 15)
  assert not any("BatchNorm" in l.__class__.__name__ for l in plain.layers)
  k = [c for c in plain.layers if c.__class__.__name__ == "Conv2D"][1].kernel
  fan_in = 3 * 3 * 16
  assert np.std(k.numpy()) == pytest.approx(np.sqrt(2 / fan_in) / 15, rel=0.15)


def test_fcn_cnn_and_ntk():
  f = models.fcn((8, 8, 3), 10, depth=2, width=32, activation="tanh")
  assert f.count_params() == 192 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
  ntk = models.fcn((8, 8, 3), 10, depth=1, width=4096, parameterization="ntk")
  h = ntk.layers[1](ntk.layers[0](np.random.default_rng(0).standard_normal(
      (64, 8, 8, 3)).astype(np.float32)))
  # NTK scaling keeps pre-activations O(1) at any width.
  assert 0.3 < float(np.std(h.numpy())) < 1.0
  c = models.cnn((8, 8, 3), 10, depth=3, width=8)
  assert c(np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 10)
  with pytest.raises(ValueError, match="--model must be one of"):
    models.build("vgg", (8, 8, 3), 10)
  with pytest.raises(ValueError, match="width must be a positive integer"):
    models.fcn((8, 8, 3), 10, width=0)
