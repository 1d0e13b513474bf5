"""Per-layer (block) spectra against the dense Hessian's diagonal blocks:
the library functions, SpectrumCallback(blocks=...), the CLI flag and the
Spectrum tab's route."""

import json
import os

import keras
import numpy as np
import pytest

import tf_sharpness as tfs
from conftest import REPO, run_cli
from exact_hessian import exact_hessian
from model_families import build
from tf_sharpness.curvature import blocks as B

QUICK = os.path.join(REPO, "scripts", "flags", "quick.cfg")


def test_block_spectra_and_masses_match_the_dense_hessian():
  build("attention")  # Keras numbers auto names across the process (dense_1, ...);
  fam = build("attention")  # the blocks number them within the model
  names = ["embedding", "multi_head_attention", "layer_normalization", "dense"]
  assert [l.name for l in fam.model.layers if l.trainable_variables] != names
  cb = tfs.SpectrumCallback(None, (fam.x, fam.y), every=2, k=2, tol=1e-10, num_iters=200,
                            blocks="layer", verbose=False)
  fam.model.fit(fam.x, fam.y, batch_size=12, epochs=1, callbacks=[cb], verbose=0)
  rec = cb.records[-1]
  h = exact_hessian(fam.model, fam.exact_loss, fam.x, fam.y)
  shapes = [tuple(v.shape) for v in fam.model.trainable_variables]
  blocks = B.variable_blocks(fam.model, "layer")
  assert [b.name for b in blocks] == names == list(rec["blocks"])
  for block in blocks:
    exact = np.linalg.eigvalsh(B.dense_block(h, shapes, block))[::-1]
    got = rec["blocks"][block.name]["top_eigenvalues"]
    np.testing.assert_allclose(got, exact[:len(got)], rtol=1e-6, atol=1e-9)
    assert got[0] <= np.linalg.eigvalsh(h)[-1] + 1e-9  # interlacing
  w, q = np.linalg.eigh(h)
  masses = rec["eigenvector_layer_mass"]
  for i in range(2):  # the top eigenvectors' shares, sign-free
    exact = {b.name: float(np.sum(q[B.block_slices(shapes, [b])[b.name], -1 - i] ** 2))
             for b in blocks}
    np.testing.assert_allclose([masses[n][i] for n in names], [exact[n] for n in names],
                               atol=1e-6)
  np.testing.assert_allclose(sum(m[0] for m in masses.values()), 1.0, rtol=1e-12)


class _Scaled(keras.Model):
  """A subclassed model with a weight of its own, outside model.layers."""

  def __init__(self):
    super().__init__()
    self.dense = keras.layers.Dense(3, name="head")
    self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

  def call(self, x):
    return self.dense(x) * self.scale


def test_layer_blocks_partition_every_variable():
  model = _Scaled()
  model(np.zeros((1, 4)))
  blocks = B.variable_blocks(model, "layer")
  assert [b.name for b in blocks] == ["head", "(other variables)"]
  assert sorted(i for b in blocks for i in b.indices) == list(range(3))
  q = np.random.default_rng(0).normal(size=(2, 4 * 3 + 3 + 1))
  mass = B.eigenvector_mass(q, [tuple(v.shape) for v in model.trainable_variables], blocks)
  np.testing.assert_allclose(np.sum(list(mass.values()), axis=0), 1.0)


def test_block_choices_regex_and_mapping():
  fam = build("multi_output")
  assert [b.name for b in B.variable_blocks(fam.model, "label|value")] == ["label", "value"]
  custom = B.variable_blocks(fam.model, {"kernels": "kernel", "biases": "bias"})
  assert [len(b.indices) for b in custom] == [3, 3]
  with pytest.raises(ValueError, match="selects no trainable variable"):
    B.variable_blocks(fam.model, "nothing_matches")
  with pytest.raises(ValueError, match="not a regular expression"):
    B.variable_blocks(fam.model, "(")


def test_blocks_and_sharpness_flags_write_records_and_the_tab_serves_them(tmp_path):
  """--spectrum_blocks and --sharpness_* in our loop (one run for both)."""
  from plugin_client import plugin_client
  logdir = str(tmp_path / "run")
  proc = run_cli("train", f"--flagfile={QUICK}", f"--logdir={logdir}",
                    "--model=fcn", "--depth=2", "--width=16", "--steps=2",
                    "--spectrum_every=2", "--spectrum_k=2", "--eval_every=0",
                    "--density_every=0", "--spectrum_blocks=layer", "--train_size=200",
                    "--hessian_size=40", "--spectrum_iters=30", "--sharpness_every=2",
                    "--sharpness_measures=worst_l2,adaptive_avg", "--sharpness_steps=2",
                    "--sharpness_samples=2")
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = [json.loads(l) for l in open(os.path.join(logdir, "metrics.jsonl"))]
  measured = [r for r in records if "blocks" in r]
  assert [r["step"] for r in measured] == [0, 2]
  assert set(measured[0]["blocks"]) == set(measured[0]["eigenvector_layer_mass"])
  for r in measured:
    top = r["top_eigenvalues"][0]
    assert all(b["top_eigenvalues"][0] <= top * (1 + 1e-2) for b in r["blocks"].values())
    assert set(r["sharpness"]) == {"worst_l2", "adaptive_avg"}
    assert r["sharpness"]["worst_l2"] > 0 and set(r["sharpness_stderr"]) == {"adaptive_avg"}
  client = plugin_client(str(tmp_path))
  tags = client.get("/tags").get_json()["run"]
  assert tags["hessian/blocks"] == "blocks" and tags["sharpness"] == "sharpness"
  points = client.get("/blocks?run=run&tag=hessian/blocks").get_json()
  assert [p["step"] for p in points] == [0, 2]
  assert points[0]["blocks"] == list(measured[0]["blocks"])
  points = client.get("/sharpness?run=run&tag=sharpness").get_json()
  assert [p["step"] for p in points] == [0, 2]
  assert set(points[0]["stderr"]) == {"adaptive_avg"}


def test_spectrum_blocks_and_sharpness_flags_are_validated():
  for flag in ("--spectrum_blocks=(", "--sharpness_measures=flatness"):
    proc = run_cli("train", f"--flagfile={QUICK}", flag)
    assert proc.returncode == 1 and flag.split("=")[0] in proc.stderr, proc.stderr[-500:]
