"""Any experiment's output, read back: which experiment wrote a JSON (or a
phase diagram's runs.jsonl) and its tables, with no settings typed again.
``tf-sharpness report FILE`` prints them.

The typed results carry an ``"experiment"`` key (``nsgd``, ``step_length``,
the subcommand that wrote them) and their settings; the older list-shaped
JSON of ``eos``, ``sweep`` and ``walk`` are told apart by their keys; a
trajectory summary (``report --json``) by its ``lambda_max`` and
``logdir``.
"""

from __future__ import annotations

import json

from tf_sharpness import saved_run
from tf_sharpness.experiments import (edge_quantities, eos, nsgd_table, phase,
                                      self_stabilization, step_length, sweep, walk)

KINDS = ("nsgd", "step_length", "edge_quantities", "self_stabilization", "eos", "sweep",
         "walk", "phase", "measure", "trajectory")


def load(path: str):
  """The JSON at ``path``, or the list of records of a ``.jsonl``."""
  with open(path, encoding="utf-8") as f:
    if path.endswith(".jsonl"):
      return [json.loads(line) for line in f if line.strip()]
    return json.load(f)


def identify(data) -> str:
  """The experiment that wrote ``data``, one of ``KINDS``; ValueError
  naming what is accepted otherwise."""
  if isinstance(data, dict) and data.get("experiment") in {
      "nsgd", "step_length", "edge_quantities", "self_stabilization", "eos", "sweep", "walk"}:
    return data["experiment"]
  if isinstance(data, dict) and {"lambda_max", "steps", "logdir"} <= data.keys():
    return "trajectory"
  if nsgd_table_rows(data):
    return "nsgd"
  if eos.is_result(data):
    return "eos"
  if sweep.is_result(data):
    return "sweep"
  if walk.is_result(data):
    return "walk"
  if isinstance(data, list) and data and all(
      isinstance(r, dict) and {"depth", "width", "c", "x"} <= r.keys() for r in data):
    return "phase"
  if isinstance(data, list) and data and all(
      isinstance(r, dict) and {"lambda_max", "subset_lambda_max", "interval"} <= r.keys()
      for r in data):
    return "measure"  # tf-sharpness measure --json
  raise ValueError(f"not the output of any experiment ({', '.join(KINDS)})")


def nsgd_table_rows(data) -> bool:
  """A bare list of NSGD table rows (its JSON before it kept settings)."""
  try:
    nsgd_table.Result.from_json(data)
  except (ValueError, AttributeError, TypeError):
    return False
  return isinstance(data, list)


def report(data, *, windows=(), loss_levels=(), at_steps=()) -> str:
  """The tables of ``data`` (not for ``trajectory``, which the trajectory
  report prints): ``windows`` (A:B pairs) for eos and sweep, ``loss_levels``
  for sweep and (the paired comparisons) nsgd, ``at_steps`` for eos."""
  kind = identify(data)
  parts = [f"({kind})"]
  if kind == "nsgd":
    result = nsgd_table.Result.from_json(data)
    parts.append(nsgd_table.report(result, result.settings or nsgd_table.Settings(),
                                   loss_levels))
    if result.settings is None:
      parts.insert(1, "(a JSON without its settings: epochs and the target loss assume "
                      "the defaults; `nsgd --from_json` with the settings' flags is exact)")
  elif kind == "step_length":
    result = step_length.Result.from_json(data)
    parts += [step_length.table(result), step_length.trajectory_table(result)]
  elif kind == "edge_quantities":
    parts.append(edge_quantities.table(edge_quantities.Result.from_json(data)))
  elif kind == "measure":
    parts.append(saved_run.table(data))
  elif kind == "self_stabilization":
    parts.append(self_stabilization.table(self_stabilization.Result.from_json(data)))
  elif kind == "eos":
    runs = eos.runs_of(data)
    parts.append(eos.runs_table(runs, list(at_steps)))
    if windows:
      parts.append(eos.windows_table(runs, list(windows)))
  elif kind == "sweep":
    runs = sweep.results_of(data)
    parts.append(sweep.seeds_table(runs, list(loss_levels)))
    if len(loss_levels) > 1:
      parts.append(sweep.bands_table(runs, list(loss_levels)))
    stored = sweep.stored_levels(runs)
    if stored:
      parts.append(sweep.loss_table(runs, stored))
    if windows:
      parts.append(sweep.windows_table(runs, list(windows)))
  elif kind == "walk":
    parts.append(walk.report(walk.rows_of(data)))
  elif kind == "phase":
    groups = phase.by_configuration(data)
    diverged = [k for k in sorted(groups) if any(r["diverged"] for r in groups[k])]
    parts += [phase.runs_table(data),
              phase.critical_table([phase.critical_values(groups[k])
                                            for k in diverged]),
              "(critical values of the sweeps that reached divergence; `tf-sharpness phase "
              "--runs_table=FILE` also checks that their brackets were refined)"]
  else:
    raise ValueError("a trajectory summary: the trajectory report prints it (report with "
                     "from_json)")
  return "\n\n".join(parts)
