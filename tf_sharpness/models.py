"""Models of the papers we reproduce, chosen by name through ``MODELS``.

* ``simple_cnn``: Jastrzebski et al. (2019)'s SimpleCNN.
* ``resnet32``: CIFAR ResNet-32 (He et al., 2016) with full pre-activation
  blocks; the paper's curvature runs used no normalization and the He-normal
  variance scaled down (``init_scale=1/15``).
* ``fcn`` and ``cnn``: the families of Kalra & Barkeshli (2023) and Cohen et
  al. (2021), in standard parameterization (Keras default initializers) or
  NTK parameterization (N(0, 1) weights, pre-activations scaled by
  1/sqrt(fan_in)).

Every builder takes ``input_shape`` and ``num_classes`` and returns a built
``keras.Model`` producing logits.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from tf_sharpness.errors import ConfigError

PARAMETERIZATIONS = ("standard", "ntk")


def simple_cnn(input_shape=(32, 32, 3), num_classes: int = 10, *,
               filters: int = 32, kernel_size: int = 3,
               dense_units: int = 128) -> keras.Model:
  """Conv(F,same)-Conv(F,valid)-Pool-Conv(2F,same)-Conv(2F,valid)-Pool-D128-D.

  F=32, k=3 has 361,898 parameters on 32x32x3; F=100, k=5 has 2,399,518.
  """
  _check_positive(filters=filters, kernel_size=kernel_size,
                  dense_units=dense_units, num_classes=num_classes)
  L = keras.layers
  conv = lambda f, pad: L.Conv2D(f, kernel_size, padding=pad, activation="relu")
  return keras.Sequential([
      keras.Input(input_shape),
      conv(filters, "same"), conv(filters, "valid"), L.MaxPooling2D(2),
      conv(2 * filters, "same"), conv(2 * filters, "valid"), L.MaxPooling2D(2),
      L.Flatten(),
      L.Dense(dense_units, activation="relu"),
      L.Dense(num_classes),
  ], name=f"simple_cnn_f{filters}_k{kernel_size}")


def resnet32(input_shape=(32, 32, 3), num_classes: int = 10, *,
             normalization: str = "batchnorm", init_scale: float = 1.0,
             blocks_per_stage: int = 5) -> keras.Model:
  """Pre-activation CIFAR ResNet (6n+2 layers; n=5 gives ResNet-32).

  Convolutions are He-normal (untruncated) with variance
  ``2 * init_scale / fan_in``: the convention of Jastrzebski et al.'s code,
  where ``init_scale = 1/15`` (one over the number of residual blocks)
  multiplies the variance, i.e. the standard deviation by 1/sqrt(15).  The
  classifier keeps Keras' default Glorot-uniform init, as theirs does.
  """
  if normalization not in ("batchnorm", "none"):
    raise ValueError("normalization must be 'batchnorm' or 'none', got "
                     f"{normalization!r}")
  if not init_scale > 0:
    raise ValueError(f"init_scale must be > 0, got {init_scale}")
  _check_positive(num_classes=num_classes, blocks_per_stage=blocks_per_stage)
  L = keras.layers
  init = lambda: keras.initializers.VarianceScaling(
      scale=2.0 * init_scale, mode="fan_in", distribution="untruncated_normal")
  conv = lambda f, k, s: L.Conv2D(f, k, strides=s, padding="same",
                                  use_bias=normalization == "none",
                                  kernel_initializer=init())

  def preact(t):
    if normalization == "batchnorm":
      t = L.BatchNormalization()(t)
    return L.ReLU()(t)

  inputs = keras.Input(input_shape)
  x = conv(16, 3, 1)(inputs)
  for stage, filters in enumerate((16, 32, 64)):
    for block in range(blocks_per_stage):
      stride = 2 if stage > 0 and block == 0 else 1
      h = preact(x)
      shortcut = x if stride == 1 else conv(filters, 1, stride)(h)
      h = conv(filters, 3, stride)(h)
      h = conv(filters, 3, 1)(preact(h))
      x = L.Add()([shortcut, h])
  x = L.GlobalAveragePooling2D()(preact(x))
  outputs = L.Dense(num_classes)(x)
  return keras.Model(inputs, outputs,
                     name=f"resnet{6 * blocks_per_stage + 2}_{normalization}")


@keras.saving.register_keras_serializable(package="tf_sharpness")
class NTKDense(keras.layers.Layer):
  """Dense layer in NTK parameterization: y = x W / sqrt(fan_in) + b, W ~ N(0,1)."""

  def __init__(self, units: int, activation=None, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.activation = keras.activations.get(activation)

  def build(self, input_shape):
    fan_in = int(input_shape[-1])
    self.kernel = self.add_weight(
        shape=(fan_in, self.units), name="kernel",
        initializer=keras.initializers.RandomNormal(stddev=1.0))
    self.bias = self.add_weight(shape=(self.units,), name="bias",
                                initializer="zeros")
    self.scale = 1.0 / np.sqrt(fan_in)

  def call(self, x):
    return self.activation(keras.ops.matmul(x, self.kernel) * self.scale +
                           self.bias)

  def get_config(self):
    return {**super().get_config(), "units": self.units,
            "activation": keras.activations.serialize(self.activation)}


FCN_INITS = ("glorot_uniform", "he_normal")


def fcn(input_shape=(32, 32, 3), num_classes: int = 10, *, depth: int = 2,
        width: int = 200, activation: str = "relu",
        parameterization: str = "standard", init: str = "glorot_uniform",
        use_bias: bool = True) -> keras.Model:
  """Fully connected net: ``depth`` hidden layers of ``width`` units.

  Standard parameterization initializers: ``glorot_uniform`` (Keras'
  default, zero biases) or ``he_normal``, the setting of Kalra & Barkeshli
  (2023): hidden weights N(0, 2 / fan_in), readout N(0, 1 / fan_in) (pass
  ``use_bias=False`` for their bias-free layers).
  """
  _check_positive(depth=depth, width=width, num_classes=num_classes)
  if init not in FCN_INITS:
    raise ConfigError(f"init must be one of {FCN_INITS}, got {init!r}")
  if parameterization == "ntk" and (init != "glorot_uniform" or not use_bias):
    raise ConfigError("init and use_bias apply to parameterization='standard' only")
  ntk = _dense_factory(parameterization) if parameterization == "ntk" else None

  def dense(units, act, scale):
    if ntk:
      return ntk(units, act)
    kernel = ("glorot_uniform" if init == "glorot_uniform" else
              keras.initializers.VarianceScaling(scale, mode="fan_in",
                                                 distribution="untruncated_normal"))
    return keras.layers.Dense(units, activation=act, use_bias=use_bias,
                              kernel_initializer=kernel)

  layers = [keras.Input(input_shape), keras.layers.Flatten()]
  layers += [dense(width, activation, 2.0) for _ in range(depth)]
  layers.append(dense(num_classes, None, 1.0))
  suffix = ("" if init == "glorot_uniform" else f"_{init}") + ("" if use_bias else "_nobias")
  return keras.Sequential(
      layers, name=f"fcn_d{depth}_w{width}_{activation}_{parameterization}{suffix}")


def cnn(input_shape=(32, 32, 3), num_classes: int = 10, *, depth: int = 3,
        width: int = 32, activation: str = "relu",
        parameterization: str = "standard") -> keras.Model:
  """``depth`` 3x3 same-padded conv layers of ``width`` channels, then
  global average pooling and a dense readout."""
  _check_positive(depth=depth, width=width, num_classes=num_classes)
  if parameterization not in PARAMETERIZATIONS:
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, "
                     f"got {parameterization!r}")
  if parameterization == "ntk":
    raise ValueError("parameterization='ntk' is implemented for fcn only; "
                     "use 'standard' for cnn")
  L = keras.layers
  layers = [keras.Input(input_shape)]
  layers += [L.Conv2D(width, 3, padding="same", activation=activation)
             for _ in range(depth)]
  layers += [L.GlobalAveragePooling2D(), L.Dense(num_classes)]
  return keras.Sequential(layers, name=f"cnn_d{depth}_w{width}_{activation}")


def _dense_factory(parameterization: str) -> Callable:
  if parameterization == "standard":
    return lambda units, act: keras.layers.Dense(units, activation=act)
  if parameterization == "ntk":
    return lambda units, act: NTKDense(units, activation=act)
  raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, "
                   f"got {parameterization!r}")


def _check_positive(**values):
  for name, value in values.items():
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")


MODELS: dict[str, Callable[..., keras.Model]] = {
    "simple_cnn": simple_cnn,
    "resnet32": resnet32,
    "fcn": fcn,
    "cnn": cnn,
}


def build(name: str, input_shape, num_classes: int, **kwargs) -> keras.Model:
  """Builds a registered model by name."""
  if name not in MODELS:
    raise ConfigError(f"`model` must be one of {sorted(MODELS)}, got {name!r}")
  return MODELS[name](tuple(input_shape), num_classes, **kwargs)
