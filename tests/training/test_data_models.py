"""Data pipeline (on the shared CIFAR-10 archive and the embedded subset) and
the model zoo."""

import configparser
import os
import socket
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
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


def test_training_order_makes_every_first_n_a_uniform_sample(mini_raw):
  """The embedded folder is class by class; with the default (shuffled)
  order the first 500 of a 2,000-image training set hold every class, as
  the train-set evaluation (--eval_size) and the probes (--landscape_size)
  take the first N; the source order keeps the first classes only.  The
  same examples and statistics either way."""
  from tf_sharpness import config
  shuffled = data.prepare(mini_raw, train_size=2000, seed=0)
  source = data.prepare(mini_raw, train_size=2000, seed=0, order="source")
  assert np.bincount(source.train_y[:500], minlength=10)[3:].sum() == 0  # 200 per class
  counts = np.bincount(shuffled.train_y[:500], minlength=10)
  assert counts.min() >= 25, counts  # 50 expected per class
  key = lambda p: sorted(map(bytes, p.train_x.reshape(len(p.train_y), -1)))
  assert key(shuffled) == key(source)
  np.testing.assert_array_equal(shuffled.mean, source.mean)
  again = data.prepare(mini_raw, train_size=2000, seed=0)
  np.testing.assert_array_equal(again.train_y, shuffled.train_y)  # seeded
  with pytest.raises(config.ConfigError, match="`train_order` must be one of"):
    data.prepare(mini_raw, train_size=100, order="sorted")
  # A checkpoint made before the setting existed is read as the source
  # order: resuming or reusing it with the shuffled default is refused.
  from tf_sharpness import rundir
  saved = {k: v for k, v in config.Config().to_json().items() if k != "train_order"}
  diff = rundir.config_differences(saved, config.Config().to_json(), set(),
                                   config.Config.checkpoint_defaults())
  assert diff == {"train_order": ("source", "shuffled")}
  assert not rundir.config_differences(
      saved, config.Config(train_order="source").to_json(), set(),
      config.Config.checkpoint_defaults())
  # So is an experiment's JSON: nsgd --add_to refuses to merge new seeds
  # trained in the shuffled order into seeds trained in the source order.
  from tf_sharpness.experiments import nsgd_table
  old = {k: v for k, v in config.settings_json(nsgd_table.Settings()).items()
         if k != "train_order"}
  earlier = config.settings_from_json(nsgd_table.Settings, old)
  assert earlier.train_order == "source"
  with pytest.raises(ValueError, match=r"settings differ in \['train_order'\]"):
    nsgd_table.check_mergeable(earlier, nsgd_table.Settings(seeds=(9,)))


def test_phase_records_before_the_order_setting_match_the_source_order():
  from tf_sharpness.experiments import phase
  opts = phase.Settings().opts(0)
  assert opts["train_order"] == "shuffled" and phase.protocol(opts)["train_order"] == "shuffled"
  legacy = phase.protocol({**opts, "train_order": "source"})
  assert "train_order" not in legacy  # as the committed runs.jsonl records are


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
  with pytest.raises(ValueError, match="`hessian_fraction`"):
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


@pytest.fixture
def network_up(monkeypatch):
  """Download hosts resolve (mock_data's download needs no network)."""
  monkeypatch.setattr(data.diagnosis.socket, "getaddrinfo", lambda *args, **kwargs: [])


@pytest.fixture
def network_down(monkeypatch):
  def fail(host, *args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")
  for variable in data.diagnosis.PROXY_VARIABLES:
    monkeypatch.delenv(variable, raising=False)
  monkeypatch.setattr(data.diagnosis.socket, "getaddrinfo", fail)


def test_tfds_offline_error_says_what_to_do(tmp_path, network_down):
  # Fails at once (tfds itself would retry each file for ~3.5 minutes).
  with pytest.raises(data.DatasetError) as e:
    data.load("mnist", data_dir=str(tmp_path / "empty"))
  message = str(e.value)
  assert "cannot resolve storage.googleapis.com" in message
  assert "Without a network" in message and "cifar10_mini" in message


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
  # init_scale multiplies the variance (the paper's code): std sqrt(2/(15 fan_in)).
  assert np.std(k.numpy()) == pytest.approx(np.sqrt(2 / (15 * fan_in)), rel=0.15)
  dense = plain.layers[-1].kernel.numpy()  # Glorot uniform, unscaled, as theirs
  assert np.abs(dense).max() <= np.sqrt(6 / (64 + 10))
  assert np.std(dense) == pytest.approx(np.sqrt(2 / (64 + 10)), rel=0.2)


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
  with pytest.raises(ValueError, match="`model` must be one of"):
    models.build("vgg", (8, 8, 3), 10)
  with pytest.raises(ValueError, match="width must be a positive integer"):
    models.fcn((8, 8, 3), 10, width=0)


# ------------------------------------------------- broken files and archives


def _jpeg(seed, size=8):
  noise = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)
  return tf.io.encode_jpeg(noise, quality=95).numpy()


def _image_folder(root, sizes=None, corrupt=()):
  """root/{train,test}/{a,b}/{0,1,2}.jpg of random pixels; ``sizes`` maps a
  relative path to another image size, ``corrupt`` lists files whose JPEG
  data is cut short."""
  sizes = sizes or {}
  for s, split in enumerate(("train", "test")):
    for c, cls in enumerate(("a", "b")):
      (root / split / cls).mkdir(parents=True)
      for i in range(3):
        rel = f"{split}/{cls}/{i}.jpg"
        blob = _jpeg(100 * s + 10 * c + i, sizes.get(rel, 8))
        (root / rel).write_bytes(blob[:len(blob) // 3] if rel in corrupt else blob)
  return root


def _tar_gz(folder, path):
  with tarfile.open(path, "w:gz") as archive:
    archive.add(folder, arcname=folder.name)
  return path


def test_small_archive_loads_like_its_folder(tmp_path):
  folder = _image_folder(tmp_path / "root")
  archive = _tar_gz(folder, tmp_path / "root.tar.gz")
  a, b = data.load_image_folder(str(folder)), data.load_image_folder(str(archive))
  assert a.train_x.shape == (6, 8, 8, 3) and a.class_names == ["a", "b"]
  np.testing.assert_array_equal(a.train_y, [0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(a.train_x, b.train_x)
  np.testing.assert_array_equal(a.test_x, b.test_x)


@pytest.mark.parametrize("keep", [0.5, 0.9, 40])
def test_truncated_archive_says_download_again(tmp_path, keep):
  archive = _tar_gz(_image_folder(tmp_path / "root"), tmp_path / "root.tar.gz")
  blob = archive.read_bytes()
  cut = tmp_path / "cut.tar.gz"
  cut.write_bytes(blob[:int(keep * len(blob)) if keep < 1 else keep])
  with pytest.raises(data.DatasetError) as e:
    data.load(str(cut))
  message = str(e.value)
  assert message.startswith(f"`dataset`: {cut} is truncated or corrupt (")
  assert message.endswith("; download it again") and "\n" not in message


def test_corrupt_jpeg_is_named(tmp_path):
  folder = _image_folder(tmp_path / "root", corrupt=["train/b/1.jpg"])
  with pytest.raises(data.DatasetError) as e:
    data.load(str(folder))
  message = str(e.value)
  assert "cannot decode image train/b/1.jpg:" in message, message
  assert "\n" not in message and "and 1 more" not in message
  archive = _tar_gz(folder, tmp_path / "root.tar.gz")
  with pytest.raises(data.DatasetError, match="cannot decode image root/train/b/1.jpg"):
    data.load(str(archive))


def test_images_of_different_sizes_are_named(tmp_path):
  folder = _image_folder(tmp_path / "root", sizes={"test/a/2.jpg": 6})
  with pytest.raises(data.DatasetError) as e:
    data.load(str(folder))
  message = str(e.value)
  assert "all images must share one size" in message
  assert "test/a/2.jpg is 6x6, while 5 of 6 images (e.g. test/a/0.jpg) are 8x8" in message


# ----------------------------------------------------- tensorflow-datasets


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)),
                                        ("cifar10", (32, 32, 3))])
def test_tfds_through_the_builder_with_mock_data(tmp_path, name, shape,
                                                 network_up):
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=20):
    raw = data.load(name, data_dir=str(tmp_path))
    names = tfds.builder(name).info.features["label"].names
  assert raw.train_x.shape == (20, *shape) and raw.test_x.shape == (20, *shape)
  assert raw.train_x.dtype == raw.test_x.dtype == np.uint8
  assert raw.train_y.dtype == np.int32 and raw.train_y.shape == (20,)
  assert 0 <= raw.train_y.min() and raw.train_y.max() < 10
  assert raw.class_names == list(names) and len(names) == 10
  assert raw.source == f"tfds:{name}"
  assert raw.train_x.max() > 0  # mock pixels, not an all-zero padding


def test_training_on_grayscale_tfds_data(tmp_path, network_up):
  import keras
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=48):
    raw = data.load("mnist", data_dir=str(tmp_path))
  prep = data.prepare(raw, validation_size=8, seed=0)
  assert prep.input_shape == (28, 28, 1) and prep.mean.shape == (1, 1, 1)
  assert prep.train_x.dtype == np.float32 and prep.train_x.shape == (40, 28, 28, 1)
  shifted = data.augment(tf.constant(prep.train_x[:4]), tf.constant([0, 1], tf.int64))
  assert shifted.shape == (4, 28, 28, 1)
  keras.utils.set_random_seed(0)
  model = models.simple_cnn(prep.input_shape, prep.num_classes, filters=4)
  model.compile(optimizer=keras.optimizers.SGD(0.01),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  history = model.fit(prep.train_x, prep.train_y, batch_size=20, epochs=2,
                      validation_data=(prep.val_x, prep.val_y), verbose=0)
  assert np.all(np.isfinite(history.history["loss"]))
  assert model.predict(prep.test_x, verbose=0).shape == (48, 10)


def test_tfds_missing_module_is_not_blamed_on_the_network(monkeypatch):
  import tensorflow_datasets as tfds

  def builder(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'importlib_resources'",
                              name="importlib_resources")
  monkeypatch.setattr(tfds, "builder", builder)
  with pytest.raises(data.DatasetError) as e:
    data.load("mnist")
  message = str(e.value)
  assert "module 'importlib_resources' is missing" in message
  assert "`pip install importlib_resources`" in message
  assert "network" in message and "Without a network" not in message
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(data.DatasetError, match="`pip install tensorflow-datasets`"):
    data.load("cifar10")


def test_tfds_dependencies_are_declared_and_installed(tmp_path):
  import tensorflow_datasets as tfds
  # Every builder resolves its code path with importlib_resources (the
  # ModuleNotFoundError of a fresh environment came from here).
  assert tfds.builder("mnist", data_dir=str(tmp_path)).code_path
  import scipy.io  # noqa: F401  (svhn_cropped reads .mat files)
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(REPO, "setup.cfg"))
  requires = cfg["options"]["install_requires"]
  assert "importlib_resources" in requires
  assert "tensorflow-datasets[svhn]" in requires
