"""Loading image-classification datasets into memory (uint8 pixels,
integer labels), from one string: the embedded ``cifar10_mini``, an image
folder or .tar.gz of one, or a tensorflow-datasets name (see
``tf_sharpness.data``)."""

from __future__ import annotations

import dataclasses
import functools
import os
import tarfile
import zlib
from typing import Sequence

import numpy as np
import tensorflow as tf

from tf_sharpness.data import diagnosis
from tf_sharpness.data.diagnosis import DatasetError

EMBEDDED = {
    "cifar10_mini": os.path.join(os.path.dirname(os.path.dirname(__file__)), "datasets",
                                 "cifar10_mini.tar.gz"),
}
TFDS_NAMES = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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


def load(dataset: str = "cifar10_mini", data_dir: str | None = None) -> RawData:
  """Loads a dataset by embedded name, image-folder path or tfds name."""
  if not isinstance(dataset, str) or not dataset:
    raise DatasetError("`dataset` must be a non-empty string")
  if dataset in EMBEDDED:
    return _load_image_folder_cached(EMBEDDED[dataset])
  if os.path.sep in dataset or dataset.endswith(".tar.gz") or os.path.exists(dataset):
    if not os.path.exists(dataset):
      raise DatasetError(f"`dataset`: no such file or directory: {dataset}")
    return _load_image_folder_cached(os.path.abspath(dataset))
  if dataset in TFDS_NAMES:
    return _load_tfds(dataset, data_dir)
  raise DatasetError(
      f"`dataset={dataset!r}` is not known: use one of "
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
            f"`dataset`: {path} has no {split}/ folder; expected the layout "
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
    raise DatasetError(f"`dataset`: {path} is neither a directory nor a .tar.gz")
  for split in files:
    files[split] = {c: f for c, f in files[split].items() if f}
    if not files[split]:
      raise DatasetError(
          f"`dataset`: {path} has no '{split}/<class>/*.jpg' images; expected "
          "the layout ROOT/{train,test}/<class>/*.{jpg,png}")
  classes = sorted(files["train"])
  if sorted(files["test"]) != classes:
    raise DatasetError(
        f"`dataset`: {path}: train classes {classes} differ from test classes "
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
    raise DatasetError(f"`dataset`: cannot read {path} ({e.strerror})") from e
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    raise DatasetError(
        f"`dataset`: {path} is truncated or corrupt ({reason}); download it "
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
      f"`dataset`: {path} has no train/ folder; expected the layout "
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
    raise diagnosis.decode_error(blobs, path, names, e, _decode_one) from e


def _load_tfds(name: str, data_dir: str | None) -> RawData:
  """Loads both splits of a tensorflow-datasets image dataset into memory.

  Batches of 8,192 are concatenated here rather than asking tfds for one
  ``batch_size=-1`` batch: that falls back to a batch of ``sys.maxsize``
  (and aborts the process) when the split sizes are not known.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise diagnosis.import_error(name, e) from e
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if not _tfds_prepared(builder):
      offline = diagnosis.unresolvable_host(builder)
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
    if diagnosis.missing_module(e) is not None:
      raise diagnosis.import_error(name, e) from e
    raise DatasetError(
        f"`dataset={name}`: tensorflow-datasets could not load or download it "
        f"({type(e).__name__}: {str(e)[:200]}). Without a network, either "
        f"prepare it on a networked machine and pass `data_dir`, or pass an "
        "image folder / .tar.gz path (e.g. ../shared/data/cifar10-jpeg.tar.gz)"
        ", or use `dataset=cifar10_mini`") from e
  (tx, ty), (vx, vy) = arrays  # grayscale (mnist) stays single-channel
  return RawData(tx.astype(np.uint8), ty.astype(np.int32), vx.astype(np.uint8),
                 vy.astype(np.int32), names, source=f"tfds:{name}")


def _tfds_prepared(builder) -> bool:
  try:
    return bool(tf.io.gfile.exists(builder.data_dir) and builder.info.splits)
  except Exception:  # pylint: disable=broad-except
    return False
