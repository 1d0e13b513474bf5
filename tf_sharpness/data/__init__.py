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

The package: ``loaders`` (the three sources), ``diagnosis`` (one-line
errors naming what failed) and ``preprocessing`` (splits, standardization,
augmentation).
"""

from tf_sharpness.data.diagnosis import DatasetError
from tf_sharpness.data.loaders import (EMBEDDED, IMAGE_SUFFIXES, TFDS_NAMES, RawData, load,
                                       load_image_folder)
from tf_sharpness.data.preprocessing import (ORDERS, STANDARDIZE, Prepared, augment, balanced_subset,
                                             hessian_subset, one_hot, prepare)

__all__ = ["DatasetError", "EMBEDDED", "IMAGE_SUFFIXES", "TFDS_NAMES", "RawData", "load",
           "load_image_folder", "ORDERS", "STANDARDIZE", "Prepared", "augment", "balanced_subset",
           "hessian_subset", "one_hot", "prepare"]
