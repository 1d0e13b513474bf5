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

import dataclasses
import functools
import os
import tarfile
from typing import Sequence

import numpy as np
import tensorflow as tf

EMBEDDED = {
    "cifar10_mini": os.path.join(os.path.dirname(__file__), "datasets",
                                 "cifar10_mini.tar.gz"),
}
TFDS_NAMES = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped")
STANDARDIZE = ("per_channel", "per_pixel", "none")
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
  """Reads ``ROOT/{train,test}/<class>/*.{jpg,png}`` from a folder or .tar.gz."""
  files: dict[str, dict[str, list]] = {"train": {}, "test": {}}
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
        files[split][cls] = [_read_file(os.path.join(cdir, f)) for f in names]
  elif tarfile.is_tarfile(path):
    with tarfile.open(path) as archive:
      entries = []
      for member in archive:
        if not member.isfile() or not member.name.lower().endswith(IMAGE_SUFFIXES):
          continue
        parts = member.name.strip("/").split("/")
        if len(parts) < 3 or parts[-3] not in files:
          continue
        entries.append((parts[-3], parts[-2], parts[-1],
                        archive.extractfile(member).read()))
      for split, cls, name, data in sorted(entries, key=lambda e: e[:3]):
        files[split].setdefault(cls, []).append(data)
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
    blobs, labels = [], []
    for label, cls in enumerate(classes):
      blobs += files[split][cls]
      labels += [label] * len(files[split][cls])
    out[split] = (_decode(blobs), np.asarray(labels, dtype=np.int32))
  return RawData(out["train"][0], out["train"][1], out["test"][0],
                 out["test"][1], classes, source=path)


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


def _decode(blobs: Sequence[bytes]) -> np.ndarray:
  decode = lambda b: tf.io.decode_image(b, channels=3, expand_animations=False)
  ds = tf.data.Dataset.from_tensor_slices(list(blobs)).map(
      decode, num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
  try:
    return np.concatenate([b.numpy() for b in ds]).astype(np.uint8)
  except tf.errors.InvalidArgumentError as e:
    raise DatasetError(f"--dataset: could not decode an image "
                       f"(all images must share one size): {e.message}") from e


def _load_tfds(name: str, data_dir: str | None) -> RawData:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if not _tfds_prepared(builder):
      builder.download_and_prepare()
    splits = builder.as_dataset(split=["train", "test"], batch_size=-1,
                                as_supervised=True)
  except Exception as e:  # network errors come in many types
    raise DatasetError(
        f"--dataset={name}: tensorflow-datasets could not load or download it "
        f"({type(e).__name__}: {str(e)[:200]}). Without a network, either "
        f"prepare it on a networked machine and pass --data_dir, or pass an "
        "image folder / .tar.gz path (e.g. ../shared/data/cifar10-jpeg.tar.gz)"
        ", or use --dataset=cifar10_mini") from e
  (tx, ty), (vx, vy) = [(np.asarray(x), np.asarray(y)) for x, y in tfds.as_numpy(splits)]
  if tx.shape[-1] == 1:
    pass  # grayscale stays single-channel
  names = builder.info.features["label"].names
  return RawData(tx.astype(np.uint8), ty.astype(np.int32), vx.astype(np.uint8),
                 vy.astype(np.int32), list(names), source=f"tfds:{name}")


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


def prepare(raw: RawData, *, train_size: int = 0, validation_size: int = 0,
            standardize: str = "per_channel", seed: int = 0) -> Prepared:
  """Splits, subsets and standardizes ``raw``.

  The validation split (``validation_size`` examples, seeded and
  class-balanced) is held out of the training split first; then
  ``train_size`` > 0 keeps a seeded class-balanced subset of what is left.
  Standardization uses statistics of the final training split only:
  ``per_channel`` (mean and std per colour channel), ``per_pixel`` (the
  paper's per-pixel mean and one global std) or ``none`` (scale to [0, 1]).
  """
  if standardize not in STANDARDIZE:
    raise ValueError(f"--standardize must be one of {STANDARDIZE}, "
                     f"got {standardize!r}")
  for name, value in (("train_size", train_size),
                      ("validation_size", validation_size)):
    if value < 0:
      raise ValueError(f"--{name} must be >= 0, got {value}")
  x, y = raw.train_x, raw.train_y
  if validation_size >= len(y):
    raise ValueError(f"--validation_size={validation_size} leaves no training "
                     f"data ({len(y)} examples)")
  if validation_size:
    val_idx = balanced_subset(y, validation_size, seed + 1)
    keep = np.setdiff1d(np.arange(len(y)), val_idx)
    val_x, val_y, x, y = x[val_idx], y[val_idx], x[keep], y[keep]
  else:
    val_x, val_y = x[:0], y[:0]
  if train_size:
    if train_size > len(y):
      raise ValueError(f"--train_size={train_size} exceeds the {len(y)} "
                       "training examples available")
    idx = balanced_subset(y, train_size, seed)
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
  return Prepared(norm(x), y, norm(val_x), val_y, norm(raw.test_x), raw.test_y,
                  mean.astype(np.float32), std.astype(np.float32),
                  raw.num_classes, list(raw.class_names))


def hessian_subset(num_train: int, fraction: float = 0.05, *, size: int = 0,
                   seed: int = 0) -> np.ndarray:
  """Seeded indices of the training examples the spectrum is measured on.

  ``size`` > 0 overrides ``fraction`` (the paper drew 2,250 of 45,000, 5%).
  """
  if size <= 0:
    if not 0 < fraction <= 1:
      raise ValueError(f"--hessian_fraction must be in (0, 1], got {fraction}")
    size = max(1, int(round(fraction * num_train)))
  if size > num_train:
    raise ValueError(f"--hessian_size={size} exceeds the {num_train} training "
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
