"""Per-layer (block) curvature: the diagonal blocks of the Hessian and where
the top eigenvectors live.

Partition the parameters theta = (theta_1, ..., theta_B) into blocks, by
default one per layer of the model (every trainable variable the layer
holds, its sublayers' included).  With P_b the selection of block b's
coordinates, the diagonal block

    H_bb = P_b H P_b^T = d^2 L / d theta_b^2

is the curvature of the loss when only block b moves.  ``BlockOperator``
applies it (H_bb u = P_b H (P_b^T u): one full Hessian-vector product with
the other blocks' part zero), so the spectral methods give its top-k.
By Cauchy interlacing lambda_max(H_bb) <= lambda_max(H).

For a unit eigenvector q of H, its *mass* in block b is ||P_b q||^2; the
masses over a partition of all variables sum to 1.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

import numpy as np



@dataclasses.dataclass(frozen=True)
class Block:
  """A named group of trainable variables, by their index in
  ``model.trainable_variables``."""
  name: str
  indices: tuple[int, ...]


BlockSpec = str | Mapping[str, str]


def variable_blocks(model, blocks: BlockSpec = "layer") -> list[Block]:
  """The blocks of ``model.trainable_variables``.

  Args:
    blocks: ``"layer"``: one block per layer of ``model.layers`` that has
      trainable variables, named by ``layer_names``, and "(other
      variables)" for any the layers do not
      hold (a partition: the masses sum to 1); any other string: a regular
      expression, the layers whose (``layer_names``) name it matches; a
      mapping ``{block name: regular expression}``: the variables whose path
      (``variable.path``) each expression matches (they may overlap).
  """
  variables = list(model.trainable_variables)
  index = {id(v): i for i, v in enumerate(variables)}
  if isinstance(blocks, Mapping):
    out = [Block(str(name), tuple(i for i, v in enumerate(variables)
                                  if re.search(_regex(pattern, name), v.path)))
           for name, pattern in blocks.items()]
  elif isinstance(blocks, str):
    pattern = None if blocks == "layer" else _regex(blocks, "blocks")
    names = layer_names(model)
    out = [Block(names[i], tuple(sorted(index[id(v)] for v in layer.trainable_variables
                                        if id(v) in index)))
           for i, layer in enumerate(model.layers)
           if pattern is None or re.search(pattern, names[i])]
  else:
    raise ValueError("blocks must be 'layer', a regular expression over layer names "
                     f"or a {{name: regex over variable paths}} mapping, got {blocks!r}")
  out = [b for b in out if b.indices]
  if blocks == "layer":  # variables no layer of model.layers holds (a subclass's own)
    covered = {i for b in out for i in b.indices}
    rest = tuple(i for i in range(len(variables)) if i not in covered)
    if rest:
      out.append(Block("(other variables)", rest))
  if not out:
    raise ValueError(f"blocks={blocks!r} selects no trainable variable of model "
                     f"{model.name!r} (layers: {[l.name for l in model.layers]})")
  return out


def _snake(name: str) -> str:
  """Keras' default layer name for a class name (MultiHeadAttention ->
  multi_head_attention)."""
  name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
  return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def layer_names(model) -> list[str]:
  """The names of ``model.layers`` as blocks: a name you gave is kept; one
  Keras generated (dense_59: numbered across the process) is numbered
  within the model instead (dense, dense_1, ...), as a fresh process names
  it, so the blocks of two runs line up in TensorBoard and on resume."""
  counts: dict = {}
  out = []
  for layer in model.layers:
    base = _snake(type(layer).__name__)
    if re.fullmatch(rf"{re.escape(base)}(_\d+)?", layer.name):
      k = counts.get(base, 0)
      counts[base] = k + 1
      out.append(base if k == 0 else f"{base}_{k}")
    else:
      out.append(layer.name)
  return out


def _regex(pattern: str, what: str) -> str:
  try:
    re.compile(pattern)
  except re.error as e:
    raise ValueError(f"blocks: {what!r}: {pattern!r} is not a regular expression ({e})")
  return pattern


class BlockOperator:
  """The diagonal block H_bb of a curvature operator (see the module doc);
  itself an operator of the protocol in ``linear_operator``."""

  def __init__(self, operator, block: Block):
    self.operator = operator
    self.block = block
    self.shapes = [operator.shapes[i] for i in block.indices]
    self.dim = int(sum(np.prod(s) for s in self.shapes))
    self.dtype = operator.dtype
    self.num_matvecs = 0

  def matvec(self, v):
    full = [np.zeros(s) for s in self.operator.shapes]
    for i, part in zip(self.block.indices, v):
      full[i] = part
    hv = self.operator.matvec(full)
    self.num_matvecs += 1
    return [hv[i] for i in self.block.indices]


def block_slices(shapes: Sequence, blocks: Sequence[Block]) -> dict[str, np.ndarray]:
  """Each block's coordinates in the flat parameter vector."""
  sizes = [int(np.prod(s)) for s in shapes]
  starts = np.concatenate([[0], np.cumsum(sizes)])
  return {b.name: np.concatenate([np.arange(starts[i], starts[i + 1]) for i in b.indices])
          for b in blocks}


def eigenvector_mass(flat_vectors: np.ndarray, shapes: Sequence,
                     blocks: Sequence[Block]) -> dict[str, list[float]]:
  """||P_b q_i||^2 / ||q_i||^2 for each block b and each row q_i."""
  q = np.atleast_2d(np.asarray(flat_vectors, dtype=np.float64))
  norms = np.sum(q * q, axis=1)
  return {name: (np.sum(q[:, idx] ** 2, axis=1) / norms).tolist()
          for name, idx in block_slices(shapes, blocks).items()}


def dense_block(matrix: np.ndarray, shapes: Sequence, block: Block) -> np.ndarray:
  """H_bb of an explicit matrix (for tests and small models)."""
  idx = block_slices(shapes, [block])[block.name]
  return np.asarray(matrix)[np.ix_(idx, idx)]


__all__ = ["Block", "BlockOperator", "block_slices", "dense_block", "eigenvector_mass",
           "layer_names", "variable_blocks"]
