"""Stability thresholds against the optimizers' own iterations on a quadratic,
and the lines the training loop records for each optimizer."""

import keras
import numpy as np
import pytest

import tf_sharpness as tfs
from tf_sharpness import stability


def grows(curvature, steps=4000, **opt_kwargs):
  """Runs a Keras/NSGD optimizer on L = 0.5 * curvature * x^2 from x = 1;
  True if |x| ends up larger than it started."""
  x = keras.Variable(np.array([1.0], np.float32))
  opt = opt_kwargs.pop("cls", keras.optimizers.SGD)(**opt_kwargs)
  for _ in range(steps):
    opt.apply([curvature * x.value], [x])
  return escaped(x.numpy())


def escaped(values) -> bool:
  """Diverged: non-finite (overflow) or larger than the start, 1."""
  values = np.abs(np.asarray(values, np.float64))
  return bool(not np.all(np.isfinite(values)) or np.max(values) > 1.0)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.5, False), (0.9, False),
                                               (0.5, True), (0.9, True)])
def test_heavy_ball_and_nesterov_thresholds(momentum, nesterov):
  lr = 0.1
  lam = stability.heavy_ball(lr, momentum, nesterov)
  assert not grows(0.99 * lam, learning_rate=lr, momentum=momentum, nesterov=nesterov)
  assert grows(1.01 * lam, learning_rate=lr, momentum=momentum, nesterov=nesterov)
  labels = [t.label for t in stability.thresholds(
      keras.optimizers.SGD(lr, momentum=momentum, nesterov=nesterov))]
  assert len(labels) == 1


def test_nsgd_thresholds_are_those_of_its_two_step_sizes():
  """Along a set direction the step is gamma*eta; elsewhere complement*eta."""
  lr, gamma, complement, momentum = 0.1, 0.25, 2.0, 0.5
  opt = tfs.NSGD(lr, gamma=gamma, complement=complement, top_k=1, momentum=momentum)
  lines = {t.label: t.value for t in stability.thresholds(opt)}
  assert lines == pytest.approx({"2(1+β)/(γη)": 2 * 1.5 / (gamma * lr),
                                 "2(1+β)/(cη)": 2 * 1.5 / (complement * lr)})
  # A 2-D quadratic diag(a, b) with the nudged direction e1: stable iff
  # a < the gamma line and b < the complement line.
  top, rest = lines["2(1+β)/(γη)"], lines["2(1+β)/(cη)"]
  for a, b, unstable in ((0.99 * top, 0.99 * rest, False), (1.01 * top, 0.5 * rest, True),
                         (0.5 * top, 1.01 * rest, True)):
    x = keras.Variable(np.array([1.0, 1.0], np.float32))
    nsgd = tfs.NSGD(lr, gamma=gamma, complement=complement, top_k=1, momentum=momentum)
    nsgd.build([x])
    nsgd.set_directions([[np.array([1.0, 0.0])]])
    for _ in range(3000):
      nsgd.apply([np.array([a, b], np.float32) * x.value], [x])
    assert escaped(x.numpy()) == unstable, (a, b)


def test_adam_threshold_on_a_frozen_preconditioner():
  """Adam's update with a fixed preconditioner P on L = 0.5 lambda x^2 is
  EMA momentum on the preconditioned curvature lambda / P: stable iff
  lambda / P < (2 + 2 beta_1) / ((1 - beta_1) eta) (Cohen et al. 2022)."""
  lr, beta_1 = 0.01, 0.9
  limit = stability.adam(lr, beta_1)
  for factor, unstable in ((0.99, False), (1.01, True)):
    lam = factor * limit
    x, m = 1.0, 0.0
    for _ in range(20000):
      m = beta_1 * m + (1 - beta_1) * lam * x
      x -= lr * m
    assert escaped([x]) == unstable
  lines = stability.preconditioned_thresholds(keras.optimizers.Adam(lr, beta_1=beta_1))
  assert [t.value for t in lines] == pytest.approx([38 / lr])
  assert stability.thresholds(keras.optimizers.Adam(lr)) == []
