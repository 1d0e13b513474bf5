"""Why a dataset could not be loaded, said in one line: the file that does
not decode or has another size, the Python module tensorflow-datasets is
missing, or a download host that does not resolve (no network)."""

from __future__ import annotations

import collections
import os
import socket
import urllib.parse

import tensorflow as tf


class DatasetError(ValueError):
  """A dataset could not be found, read or downloaded."""


def decode_error(blobs, path, names, error, decode_one) -> DatasetError:
  """Finds which file made the batched decode fail (the failure path only)."""
  where = f"`dataset`: {path}: " if path else "`dataset`: "
  # One more pass over the images, decoding each alone and dropping failures:
  # the missing indices are the undecodable files.
  index = tf.data.Dataset.range(len(blobs))
  probe = tf.data.Dataset.zip(
      index, tf.data.Dataset.from_tensor_slices(list(blobs))).map(
          lambda i, b: (i, tf.shape(decode_one(b))),
          num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  shapes = {int(i): tuple(int(d) for d in s) for i, s in probe.as_numpy_iterator()}
  bad = [i for i in range(len(blobs)) if i not in shapes]
  if bad:
    try:
      decode_one(blobs[bad[0]])
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


def missing_module(error: BaseException) -> str | None:
  """The module an ImportError failed on, if ``error`` is one or was raised
  from one (``raise ... from``)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, ImportError):
      return error.name or str(error) or "?"
    error = error.__cause__
  return None


def import_error(name: str, error: BaseException) -> DatasetError:
  module = missing_module(error)
  top = module.split(".")[0]
  pip_name = _PIP_NAMES.get(top, top)
  return DatasetError(
      f"`dataset={name}`: tensorflow-datasets cannot run because the Python "
      f"module {module!r} is missing or broken ({type(error).__name__}: "
      f"{str(error)[:200]}); this is not a network problem: run "
      f"`pip install {pip_name}` (or reinstall tf-sharpness, which lists "
      "tensorflow-datasets' dependencies)")


PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY",
                   "all_proxy", "ALL_PROXY")


def unresolvable_host(builder) -> str | None:
  """A download host of ``builder`` whose name does not resolve (no network),
  or None; never guesses behind a proxy."""
  if any(os.environ.get(v) for v in PROXY_VARIABLES):
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
