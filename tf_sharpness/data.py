"""Image-classification data: loading, splits, standardization, augmentation.

Three sources, chosen by one string (``--dataset``):

* ``cifar10_mini`` (the default): 5,000 train / 1,000 test real CIFAR-10
  images (the first 500 / 100 files of every class of the JPEG release in
  ``../shared/data``) shipped inside the package, so the main job runs
  offline.
* a path to an image-folder directory or a ``.tar.gz`` of one, laid out as
  ``ROOT/{train,test}/<class>/*.{jpg,jpeg,png}``; the label of a class is its
  index in the sorted class names (for CIFAR-10: airplane=0 ... truck=9).
* a tensorflow-datasets name (``cifar10``, ``cifar100``, ``mnist``,
  ``fashion_mnist``, ``svhn_cropped``), loaded with ``tfds.load`` (which
  downloads into ``data_dir`` when the machine has a network).

Pixels are kept as uint8 until ``prepare`` splits and standardizes them with
statistics of the training split only.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import socket
import tarfile
import urllib.parse
import zlib
from typing import Sequence

import numpy as np
import tensorflow as tf

from tf_sharpness.errors import ConfigError

EMBEDDED = {
    "cifar10_mini": os.path.join(os.path.dirname(__file__), "datasets",
                                 "cifar10_mini.tar.gz"),
}
TFDS_NAMES = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped")
STANDARDIZE = ("per_channel", "per_pixel", "per_example", "none")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetError(ValueError):
  """A dataset could not be found, read or downloaded."""


@dataclasses.dataclass
class RawData:
  """Decoded images (uint8, NHWC) and integer labels of both splits."""
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  class_names: list[str]
  source: str

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


@dataclasses.dataclass
class Prepared:
  """Standardized float32 splits ready for training."""
  train_x: np.ndarray
  train_y: np.ndarray
  val_x: np.ndarray
  val_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  num_classes: int
  class_names: list[str]

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.train_x.shape[1:])


def load(dataset: str = "cifar10_mini", data_dir: str | None = None) -> RawData:
  """Loads a dataset by embedded name, image-folder path or tfds name."""
  if not isinstance(dataset, str) or not dataset:
    raise DatasetError("--dataset must be a non-empty string")
  if dataset in EMBEDDED:
    return _load_image_folder_cached(EMBEDDED[dataset])
  if os.path.sep in dataset or dataset.endswith(".tar.gz") or os.path.exists(dataset):
    if not os.path.exists(dataset):
      raise DatasetError(f"--dataset: no such file or directory: {dataset}")
    return _load_image_folder_cached(os.path.abspath(dataset))
  if dataset in TFDS_NAMES:
    return _load_tfds(dataset, data_dir)
  raise DatasetError(
      f"--dataset={dataset!r} is not known: use one of "
      f"{sorted(EMBEDDED)}, a tensorflow-datasets name {list(TFDS_NAMES)}, or "
      "a path to an image folder (or .tar.gz of one) laid out as "
      "ROOT/{train,test}/<class>/*.jpg")


@functools.lru_cache(maxsize=4)
def _load_image_folder_cached(path: str) -> RawData:
  return load_image_folder(path)


def load_image_folder(path: str) -> RawData:
  """Reads ``ROOT/{train,test}/<class>/*.{jpg,png}`` from a folder or .tar.gz.

  Raises DatasetError naming the file for a truncated or corrupt archive, an
  image that cannot be decoded, or images of different sizes.
  """
  # files[split][class] = [(name, encoded bytes)]; ``name`` is the path
  # inside the folder or the archive member name, for error messages.
  files: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
  if os.path.isdir(path):
    root = _find_root_dir(path)
    for split in files:
      split_dir = os.path.join(root, split)
      if not os.path.isdir(split_dir):
        raise DatasetError(
            f"--dataset: {path} has no {split}/ folder; expected the layout "
            "ROOT/{train,test}/<class>/*.{jpg,png}")
      for cls in sorted(os.listdir(split_dir)):
        cdir = os.path.join(split_dir, cls)
        if not os.path.isdir(cdir):
          continue
        names = sorted(f for f in os.listdir(cdir)
                       if f.lower().endswith(IMAGE_SUFFIXES))
        files[split][cls] = [
            (os.path.relpath(os.path.join(cdir, f), path),
             _read_file(os.path.join(cdir, f))) for f in names]
  elif _looks_like_tar(path):
    for split, cls, name, data in _read_tar(path):
      files[split].setdefault(cls, []).append((name, data))
  else:
    raise DatasetError(f"--dataset: {path} is neither a directory nor a .tar.gz")
  for split in files:
    files[split] = {c: f for c, f in files[split].items() if f}
    if not files[split]:
      raise DatasetError(
          f"--dataset: {path} has no '{split}/<class>/*.jpg' images; expected "
          "the layout ROOT/{train,test}/<class>/*.{jpg,png}")
  classes = sorted(files["train"])
  if sorted(files["test"]) != classes:
    raise DatasetError(
        f"--dataset: {path}: train classes {classes} differ from test classes "
        f"{sorted(files['test'])}")
  out = {}
  for split in files:
    named_blobs, labels = [], []
    for label, cls in enumerate(classes):
      named_blobs += files[split][cls]
      labels += [label] * len(files[split][cls])
    out[split] = (_decode([b for _, b in named_blobs], path,
                          [n for n, _ in named_blobs]),
                  np.asarray(labels, dtype=np.int32))
  return RawData(out["train"][0], out["train"][1], out["test"][0],
                 out["test"][1], classes, source=path)


TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def _looks_like_tar(path: str) -> bool:
  if path.lower().endswith(TAR_SUFFIXES):
    return True  # a truncated archive may not even pass is_tarfile
  try:
    return tarfile.is_tarfile(path)
  except (OSError, EOFError):
    return False


def _read_tar(path: str) -> list[tuple[str, str, str, bytes]]:
  """(split, class, member name, bytes) of every image, sorted by the first
  three; raises DatasetError for a truncated or corrupt archive."""
  entries = []
  try:
    with tarfile.open(path) as archive:
      for member in archive:
        if not member.isfile() or not member.name.lower().endswith(IMAGE_SUFFIXES):
          continue
        parts = member.name.strip("/").split("/")
        if len(parts) < 3 or parts[-3] not in ("train", "test"):
          continue
        entries.append((parts[-3], parts[-2], member.name,
                        archive.extractfile(member).read()))
  except PermissionError as e:
    raise DatasetError(f"--dataset: cannot read {path} ({e.strerror})") from e
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    raise DatasetError(
        f"--dataset: {path} is truncated or corrupt ({reason}); download it "
        "again") from e
  # Sort by split, class and file name (the folder loader's order).
  return sorted(entries, key=lambda e: (e[0], e[1], e[2].rsplit("/", 1)[-1]))


def _find_root_dir(path: str) -> str:
  """Accepts ROOT or a folder that holds exactly one ROOT."""
  if os.path.isdir(os.path.join(path, "train")):
    return path
  subdirs = [d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))]
  if len(subdirs) == 1 and os.path.isdir(os.path.join(path, subdirs[0], "train")):
    return os.path.join(path, subdirs[0])
  raise DatasetError(
      f"--dataset: {path} has no train/ folder; expected the layout "
      "ROOT/{train,test}/<class>/*.{jpg,png}")


def _read_file(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _decode_one(blob):
  return tf.io.decode_image(blob, channels=3, expand_animations=False)


def _decode(blobs: Sequence[bytes], path: str = "",
            names: Sequence[str] | None = None) -> np.ndarray:
  """Decodes encoded images (batched, in parallel) into one uint8 array."""
  ds = tf.data.Dataset.from_tensor_slices(list(blobs)).map(
      _decode_one, num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
  try:
    return np.concatenate([b.numpy() for b in ds]).astype(np.uint8)
  except tf.errors.InvalidArgumentError as e:
    names = list(names) if names is not None else [
        f"image #{i}" for i in range(len(blobs))]
    raise _decode_error(blobs, path, names, e) from e


def _decode_error(blobs, path, names, error) -> DatasetError:
  """Finds which file made the batched decode fail (the failure path only)."""
  where = f"--dataset: {path}: " if path else "--dataset: "
  # One more pass over the images, decoding each alone and dropping failures:
  # the missing indices are the undecodable files.
  index = tf.data.Dataset.range(len(blobs))
  probe = tf.data.Dataset.zip(
      index, tf.data.Dataset.from_tensor_slices(list(blobs))).map(
          lambda i, b: (i, tf.shape(_decode_one(b))),
          num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  shapes = {int(i): tuple(int(d) for d in s) for i, s in probe.as_numpy_iterator()}
  bad = [i for i in range(len(blobs)) if i not in shapes]
  if bad:
    try:
      _decode_one(blobs[bad[0]])
      reason = "undecodable"
    except tf.errors.OpError as e:
      reason = e.message.split("\n")[0].split(" [Op:")[0].strip()
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return DatasetError(
        f"{where}cannot decode image {names[bad[0]]}{more}: {reason}; remove "
        "or replace it (supported: JPEG, PNG, GIF, BMP)")
  sizes = collections.Counter(shapes.values())
  if len(sizes) > 1:
    common = sizes.most_common(1)[0][0]
    first = next(i for i in sorted(shapes) if shapes[i] != common)
    ref = next(i for i in sorted(shapes) if shapes[i] == common)
    fmt = lambda s: "x".join(map(str, s[:2]))
    return DatasetError(
        f"{where}images differ in size (all images must share one size): "
        f"{names[first]} is {fmt(shapes[first])}, while {sizes[common]} of "
        f"{len(shapes)} images (e.g. {names[ref]}) are {fmt(common)}")
  return DatasetError(f"{where}could not decode the images: {error.message}")


# Import names whose pip package is named differently.
_PIP_NAMES = {"tensorflow_datasets": "tensorflow-datasets", "PIL": "pillow",
              "tree": "dm-tree", "google": "protobuf", "cv2": "opencv-python",
              "skimage": "scikit-image", "yaml": "pyyaml"}


def _missing_module(error: BaseException) -> str | None:
  """The module an ImportError failed on, if ``error`` is one or was raised
  from one (``raise ... from``)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, ImportError):
      return error.name or str(error) or "?"
    error = error.__cause__
  return None


def _import_error(name: str, error: BaseException) -> DatasetError:
  module = _missing_module(error)
  top = module.split(".")[0]
  pip_name = _PIP_NAMES.get(top, top)
  return DatasetError(
      f"--dataset={name}: tensorflow-datasets cannot run because the Python "
      f"module {module!r} is missing or broken ({type(error).__name__}: "
      f"{str(error)[:200]}); this is not a network problem: run "
      f"`pip install {pip_name}` (or reinstall tf-sharpness, which lists "
      "tensorflow-datasets' dependencies)")


def _load_tfds(name: str, data_dir: str | None) -> RawData:
  """Loads both splits of a tensorflow-datasets image dataset into memory.

  Batches of 8,192 are concatenated here rather than asking tfds for one
  ``batch_size=-1`` batch: that falls back to a batch of ``sys.maxsize``
  (and aborts the process) when the split sizes are not known.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise _import_error(name, e) from e
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if not _tfds_prepared(builder):
      offline = _unresolvable_host(builder)
      if offline:
        # Fail now: tfds would retry each file 10 times (about 3.5 minutes).
        raise ConnectionError(f"cannot resolve {offline}, the download host")
      builder.download_and_prepare()
    arrays = []
    for split in ("train", "test"):
      ds = builder.as_dataset(split=split, as_supervised=True).batch(8192)
      xs, ys = [], []
      for x, y in tfds.as_numpy(ds):
        xs.append(x)
        ys.append(y)
      arrays.append((np.concatenate(xs), np.concatenate(ys)))
    names = list(builder.info.features["label"].names)
  except Exception as e:  # network errors come in many types
    if _missing_module(e) is not None:
      raise _import_error(name, e) from e
    raise DatasetError(
        f"--dataset={name}: tensorflow-datasets could not load or download it "
        f"({type(e).__name__}: {str(e)[:200]}). Without a network, either "
        f"prepare it on a networked machine and pass --data_dir, or pass an "
        "image folder / .tar.gz path (e.g. ../shared/data/cifar10-jpeg.tar.gz)"
        ", or use --dataset=cifar10_mini") from e
  (tx, ty), (vx, vy) = arrays  # grayscale (mnist) stays single-channel
  return RawData(tx.astype(np.uint8), ty.astype(np.int32), vx.astype(np.uint8),
                 vy.astype(np.int32), names, source=f"tfds:{name}")


_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY",
                     "all_proxy", "ALL_PROXY")


def _unresolvable_host(builder) -> str | None:
  """A download host of ``builder`` whose name does not resolve (no network),
  or None; never guesses behind a proxy."""
  if any(os.environ.get(v) for v in _PROXY_VARIABLES):
    return None
  try:
    hosts = sorted({urllib.parse.urlparse(u).hostname
                    for u in (builder.url_infos or {})} - {None})
  except Exception:  # pylint: disable=broad-except
    return None
  for host in hosts:
    try:
      socket.getaddrinfo(host, 443)
    except socket.gaierror:
      return host
  return None


def _tfds_prepared(builder) -> bool:
  try:
    return bool(tf.io.gfile.exists(builder.data_dir) and builder.info.splits)
  except Exception:  # pylint: disable=broad-except
    return False


def balanced_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
  """Indices of a seeded subset with (as near as possible) equal classes."""
  labels = np.asarray(labels)
  classes = np.unique(labels)
  if size > len(labels):
    raise ValueError(f"subset size {size} exceeds the {len(labels)} examples")
  rng = np.random.default_rng(seed)
  per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
  base, extra = divmod(size, len(classes))
  order = rng.permutation(len(classes))
  take = {c: base + (1 if rank < extra else 0) for rank, c in enumerate(order)}
  chosen = []
  for i, idx in enumerate(per_class):
    if take[i] > len(idx):
      raise ValueError(f"class {classes[i]} has only {len(idx)} examples, "
                       f"{take[i]} needed for a balanced subset of {size}")
    chosen.append(idx[:take[i]])
  return np.sort(np.concatenate(chosen))


def _balanced_subset_for(flag: str, labels, size: int, seed: int) -> np.ndarray:
  try:
    return balanced_subset(labels, size, seed)
  except ValueError as e:
    raise ConfigError(f"--{flag}={size}: {e}") from None


def prepare(raw: RawData, *, train_size: int = 0, validation_size: int = 0,
            standardize: str = "per_channel", seed: int = 0) -> Prepared:
  """Splits, subsets and standardizes ``raw``.

  The validation split (``validation_size`` examples, seeded and
  class-balanced) is held out of the training split first; then
  ``train_size`` > 0 keeps a seeded class-balanced subset of what is left.
  Standardization uses statistics of the final training split only:
  ``per_channel`` (mean and std per colour channel), ``per_pixel`` (the
  paper's per-pixel mean and one global std) or ``none`` (scale to [0, 1]);
  ``per_example`` standardizes every image by its own mean and std over all
  its values (Kalra & Barkeshli 2023), with no training statistics.
  """
  if standardize not in STANDARDIZE:
    raise ConfigError(f"--standardize must be one of {STANDARDIZE}, "
                     f"got {standardize!r}")
  for name, value in (("train_size", train_size),
                      ("validation_size", validation_size)):
    if value < 0:
      raise ConfigError(f"--{name} must be >= 0, got {value}")
  x, y = raw.train_x, raw.train_y
  if validation_size >= len(y):
    raise ConfigError(f"--validation_size={validation_size} leaves no training "
                     f"data ({len(y)} examples)")
  if validation_size:
    val_idx = _balanced_subset_for("validation_size", y, validation_size, seed + 1)
    keep = np.setdiff1d(np.arange(len(y)), val_idx)
    val_x, val_y, x, y = x[val_idx], y[val_idx], x[keep], y[keep]
  else:
    val_x, val_y = x[:0], y[:0]
  if train_size:
    if train_size > len(y):
      raise ConfigError(f"--train_size={train_size} exceeds the {len(y)} "
                       "training examples available")
    idx = _balanced_subset_for("train_size", y, train_size, seed)
    x, y = x[idx], y[idx]
  xf = x.astype(np.float64) / 255.0  # float64 statistics
  if standardize == "per_channel":
    mean = xf.mean(axis=(0, 1, 2), keepdims=True)[0]
    std = xf.std(axis=(0, 1, 2), keepdims=True)[0]
  elif standardize == "per_pixel":
    mean = xf.mean(axis=0)
    std = np.full((1, 1, xf.shape[-1]), (xf - mean).std(), np.float32)
  else:
    mean = np.zeros((1, 1, xf.shape[-1]), np.float32)
    std = np.ones((1, 1, xf.shape[-1]), np.float32)
  std = np.maximum(std, 1e-6)
  mean, std = mean.astype(np.float32), std.astype(np.float32)
  norm = lambda a: ((a.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
  if standardize == "per_example":
    norm = _standardize_each
  return Prepared(norm(x), y, norm(val_x), val_y, norm(raw.test_x), raw.test_y,
                  mean.astype(np.float32), std.astype(np.float32),
                  raw.num_classes, list(raw.class_names))


def _standardize_each(images: np.ndarray) -> np.ndarray:
  """Every image minus its own mean, over its own std (float64 statistics)."""
  a = images.astype(np.float64) / 255.0
  axes = tuple(range(1, a.ndim))
  a = (a - a.mean(axis=axes, keepdims=True)) / np.maximum(
      a.std(axis=axes, keepdims=True), 1e-6)
  return a.astype(np.float32)


def hessian_subset(num_train: int, fraction: float = 0.05, *, size: int = 0,
                   seed: int = 0) -> np.ndarray:
  """Seeded indices of the training examples the spectrum is measured on.

  ``size`` > 0 overrides ``fraction`` (the paper drew 2,250 of 45,000, 5%).
  """
  if size <= 0:
    if not 0 < fraction <= 1:
      raise ConfigError(f"--hessian_fraction must be in (0, 1], got {fraction}")
    size = max(1, int(round(fraction * num_train)))
  if size > num_train:
    raise ConfigError(f"--hessian_size={size} exceeds the {num_train} training "
                     "examples")
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(num_train, size=size, replace=False))


def augment(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Random shifts of up to 4 pixels (zero padding) and horizontal flips.

  ``x`` is a batch (NHWC); ``seed`` a shape-[2] int tensor (stateless ops, so
  a resumed run draws the same augmentations).
  """
  shape = tf.shape(x)
  n, h, w = shape[0], shape[1], shape[2]
  s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  flip = tf.random.stateless_uniform([n, 1, 1, 1], s1) < 0.5
  x = tf.where(flip, tf.reverse(x, axis=[2]), x)
  padded = tf.pad(x, [[0, 0], [4, 4], [4, 4], [0, 0]])
  offsets = tf.random.stateless_uniform([n, 2], s2, 0, 9, dtype=tf.int32)
  rows = offsets[:, 0:1] + tf.range(h)[None]  # [n, h]
  cols = offsets[:, 1:2] + tf.range(w)[None]  # [n, w]
  x = tf.gather(padded, rows, axis=1, batch_dims=1)
  x = tf.gather(x, cols, axis=2, batch_dims=1)
  return x


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return np.eye(num_classes, dtype=np.float32)[labels]
