#!/usr/bin/env python3
"""What the sharpness measures and SAM cost, on the paper's SimpleCNN.

Prints, measured in one run:
  * each named measure (``sharpness.MEASURES``) at its default settings on
    --examples images: seconds, data passes (gradients and losses) and the
    time as a multiple of one gradient pass on the same data;
  * the SAM and ASAM step / the SGD step in our loop (TrainStep) and in
    model.fit (``tfs.SAM``), batch --batch_size (target: <= 2.1x).

    python benchmarks/sharpness.py [--dataset=PATH] [--examples=256] [--repeats=10]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tf_sharpness as tfs  # noqa: E402
from machine import default_dataset, print_machine  # noqa: E402  (benchmarks/ is on the path)
from spectrum import interleaved  # noqa: E402
from tf_sharpness import data, losses, models  # noqa: E402
from tf_sharpness import sharpness as S  # noqa: E402
from tf_sharpness.train_step import TrainStep  # noqa: E402


def measures(model, x, y, repeats):
  loss = losses.mean_loss("xent")
  op = tfs.HessianOperator(model, loss, (x, y))
  grad_s = interleaved({"g": op.gradient}, repeats)["g"][0]
  print(f"one gradient pass on {len(y)} images: {grad_s * 1e3:.1f} ms (min of {repeats})")
  settings = S.Settings()
  print(f"defaults: {settings}")
  for name in S.MEASURES:
    S.measure(name, op, settings)  # warm-up (tracing)
    t = time.perf_counter()
    res = S.measure(name, op, settings)
    s = time.perf_counter() - t
    print(f"  {name}: {s:.2f} s = {s / grad_s:.1f} gradient passes "
          f"({res.num_gradients} gradients, {res.num_losses} losses, "
          f"{res.num_matvecs} HVPs)")


def steps(ds, batch, repeats):
  x, y = ds.train_x[:batch], ds.train_y[:batch]
  per_example = losses.per_example_loss("xent")
  fns = {}
  for name, rho, adaptive in (("SGD", 0.0, False), ("SAM", 0.05, False),
                              ("ASAM", 0.5, True)):
    keras.utils.set_random_seed(0)
    model = models.simple_cnn(ds.input_shape, 10)
    step = TrainStep(model, keras.optimizers.SGD(0.01), per_example, sam_rho=rho,
                     sam_adaptive=adaptive)
    fns[f"loop {name}"] = lambda step=step: float(step(x, y).loss)
  for name, wrap in (("SGD", lambda m: m), ("SAM", lambda m: tfs.SAM(m, rho=0.05))):
    keras.utils.set_random_seed(0)
    model = wrap(models.simple_cnn(ds.input_shape, 10))
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fns[f"fit {name}"] = lambda model=model: model.train_on_batch(x, y)
  times = interleaved(fns, repeats)
  for where in ("loop", "fit"):
    base = times[f"{where} SGD"][0]
    print(f"{where}: SGD step {base * 1e3:.1f} ms (min of {repeats}, batch {batch})")
    for name in ("SAM", "ASAM"):
      if f"{where} {name}" in times:
        t = times[f"{where} {name}"][0]
        print(f"  {name} step {t * 1e3:.1f} ms = {t / base:.2f}x SGD's")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default=default_dataset())
  p.add_argument("--examples", type=int, default=256)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--repeats", type=int, default=10)
  args = p.parse_args()
  print_machine()
  ds = data.prepare(data.load(args.dataset), train_size=max(args.examples, args.batch_size),
                    seed=0)
  keras.utils.set_random_seed(0)
  model = models.simple_cnn(ds.input_shape, 10)
  measures(model, ds.train_x[:args.examples], ds.train_y[:args.examples], args.repeats)
  steps(ds, args.batch_size, args.repeats)


if __name__ == "__main__":
  main()
