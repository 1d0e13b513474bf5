#!/usr/bin/env python3
"""Image-folder loading: our ``data.load_image_folder`` vs tfds's ImageFolder.

Loads both splits of an extracted ``ROOT/{train,test}/<class>/*.jpg`` folder
into uint8 numpy arrays with each loader, --repeats times, alternating the
order, and prints the best and median wall time of each.  Then checks that
both give the same class names, labels and pixels (tfds's ImageFolder
shuffles the examples deterministically, so its arrays are put back in
(class, file name) order by their ``image/filename`` feature first).  The
.tar.gz itself is timed too (our loader reads it without extracting it;
ImageFolder needs an extracted folder).

    python benchmarks/image_folder.py [--archive=../shared/data/cifar10-jpeg.tar.gz]
        [--folder=/tmp/cifar10_extracted] [--repeats=3]
"""

import argparse
import os
import statistics
import tarfile
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from machine import print_machine  # noqa: E402  (benchmarks/ is on the path)
from tf_sharpness import data  # noqa: E402


def load_ours(path):
  raw = data.load_image_folder(path)
  return raw.train_x, raw.train_y, raw.test_x, raw.test_y, raw.class_names, None


def load_tfds(root):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.folder_dataset.ImageFolder(root)
  out = []
  for split in ("train", "test"):
    ex = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    out.append((ex["image"], ex["label"], ex["image/filename"]))
  names = builder.info.features["label"].names
  (tx, ty, tf_), (vx, vy, vf) = out
  return tx, ty, vx, vy, names, (tf_, vf)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                         "shared", "data", "cifar10-jpeg.tar.gz")
  p.add_argument("--archive", default=default)
  p.add_argument("--folder", default="/tmp/cifar10_extracted",
                 help="where the archive is extracted (reused if present)")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()

  if not os.path.isdir(args.folder):
    with tarfile.open(args.archive) as archive:
      archive.extractall(args.folder, filter="data")
  root = data.loaders._find_root_dir(args.folder)  # pylint: disable=protected-access
  n_files = sum(len(f) for _, _, f in os.walk(root))
  print_machine()
  print(f"{n_files} files under {root}")
  data.load_image_folder(os.path.join(os.path.dirname(__file__), "..",
                                      "tf_sharpness", "datasets",
                                      "cifar10_mini.tar.gz"))  # warm-up

  def extract_then_tfds():
    with tempfile.TemporaryDirectory() as tmp:
      with tarfile.open(args.archive) as archive:
        archive.extractall(tmp, filter="data")
      return load_tfds(data.loaders._find_root_dir(tmp))  # pylint: disable=protected-access

  loaders = {"ours (folder)": lambda: load_ours(root),
             "tfds ImageFolder (folder)": lambda: load_tfds(root),
             "ours (.tar.gz)": lambda: load_ours(args.archive),
             "tfds ImageFolder (.tar.gz, extracted first)": extract_then_tfds}
  times = {name: [] for name in loaders}
  results = {}
  for r in range(args.repeats):
    names = list(loaders) if r % 2 == 0 else list(loaders)[::-1]
    for name in names:
      start = time.perf_counter()
      results[name] = loaders[name]()
      times[name].append(time.perf_counter() - start)
  for name, ts in times.items():
    print(f"{name:44s} best {min(ts):6.2f} s  median {statistics.median(ts):6.2f} s"
          f"  ({', '.join(f'{t:.2f}' for t in ts)})")

  tx, ty, vx, vy, names, _ = results["ours (folder)"]
  fx, fy, gx, gy, fnames, (ffiles, gfiles) = results["tfds ImageFolder (folder)"]
  checks = {"class names": list(names) == list(fnames)}
  for split, x, y, ox, oy, files in (("train", tx, ty, fx, fy, ffiles),
                                     ("test", vx, vy, gx, gy, gfiles)):
    # Our order: class (label), then file name; ImageFolder's: shuffled.
    keys = [(int(lbl), os.path.basename(f.decode())) for lbl, f in zip(oy, files)]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    checks[f"{split} labels"] = np.array_equal(y, oy[order])
    checks[f"{split} pixels"] = (x.shape == ox.shape and
                                 np.array_equal(x, ox[order]))
    checks[f"{split} same order without re-sorting"] = np.array_equal(y, oy)
  ax = results["ours (.tar.gz)"]
  checks[".tar.gz == folder"] = (np.array_equal(ax[0], tx) and
                                 np.array_equal(ax[2], vx))
  checks["ImageFolder refuses images of different sizes"] = mixed_sizes_refused()
  for name, ok in checks.items():
    print(f"{name:48s} {'yes' if ok else 'NO'}")


def mixed_sizes_refused() -> bool:
  """One 6x6 image among 8x8 ones: ours raises DatasetError; ImageFolder
  (batch_size=-1 pads with padded_batch) zero-pads it to 8x8 silently."""
  with tempfile.TemporaryDirectory() as root:
    for split in ("train", "test"):
      for cls, size in (("a", 8), ("b", 6)):
        os.makedirs(os.path.join(root, split, cls))
        tf.io.write_file(os.path.join(root, split, cls, "0.jpg"),
                         tf.io.encode_jpeg(tf.fill([size, size, 3], tf.constant(200, tf.uint8))))
    try:
      data.load_image_folder(root)
      raise AssertionError("our loader accepted images of different sizes")
    except data.DatasetError:
      pass
    try:
      x = load_tfds(root)[0]
    except Exception:  # pylint: disable=broad-except
      return True
    return not (x.shape[1:3] == (8, 8) and (x == 0).any())


if __name__ == "__main__":
  main()
