"""From loaded images to training data: validation and training splits
(seeded, class-balanced), standardization with the training split's
statistics, the Hessian subset, augmentation and one-hot labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tf_sharpness.data.loaders import RawData
from tf_sharpness.errors import ConfigError

STANDARDIZE = ("per_channel", "per_pixel", "per_example", "none")
# The order of the training examples: "shuffled" (seeded), so that the first
# N are a uniform sample, or "source", the dataset's own (an image folder's is
# class by class: its first N hold the first classes only).
ORDERS = ("shuffled", "source")


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
    raise ConfigError(f"`{flag}={size}`: {e}") from None


def prepare(raw: RawData, *, train_size: int = 0, validation_size: int = 0,
            standardize: str = "per_channel", seed: int = 0,
            order: str = "shuffled") -> Prepared:
  """Splits, subsets and standardizes ``raw``.

  The validation split (``validation_size`` examples, seeded and
  class-balanced) is held out of the training split first; then
  ``train_size`` > 0 keeps a seeded class-balanced subset of what is left.
  Standardization uses statistics of the final training split only:
  ``per_channel`` (mean and std per colour channel), ``per_pixel`` (the
  paper's per-pixel mean and one global std) or ``none`` (scale to [0, 1]);
  ``per_example`` standardizes every image by its own mean and std over all
  its values (Kalra & Barkeshli 2023), with no training statistics.
  ``order`` (``ORDERS``): the training examples in a seeded random order
  (``shuffled``), so that any first N of them are a uniform sample, or in
  the dataset's (``source``).
  """
  if order not in ORDERS:
    raise ConfigError(f"`train_order` must be one of {ORDERS}, got {order!r}")
  if standardize not in STANDARDIZE:
    raise ConfigError(f"`standardize` must be one of {STANDARDIZE}, "
                     f"got {standardize!r}")
  for name, value in (("train_size", train_size),
                      ("validation_size", validation_size)):
    if value < 0:
      raise ConfigError(f"`{name}` must be >= 0, got {value}")
  x, y = raw.train_x, raw.train_y
  if validation_size >= len(y):
    raise ConfigError(f"`validation_size={validation_size}` leaves no training "
                     f"data ({len(y)} examples)")
  if validation_size:
    val_idx = _balanced_subset_for("validation_size", y, validation_size, seed + 1)
    keep = np.setdiff1d(np.arange(len(y)), val_idx)
    val_x, val_y, x, y = x[val_idx], y[val_idx], x[keep], y[keep]
  else:
    val_x, val_y = x[:0], y[:0]
  if train_size:
    if train_size > len(y):
      raise ConfigError(f"`train_size={train_size}` exceeds the {len(y)} "
                       "training examples available")
    idx = _balanced_subset_for("train_size", y, train_size, seed)
    x, y = x[idx], y[idx]
  if order == "shuffled":
    perm = np.random.default_rng([seed, 5]).permutation(len(y))
    x, y = x[perm], y[perm]
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
      raise ConfigError(f"`hessian_fraction` must be in (0, 1], got {fraction}")
    size = max(1, int(round(fraction * num_train)))
  if size > num_train:
    raise ConfigError(f"`hessian_size={size}` exceeds the {num_train} training "
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
