"""The command line: ``tf-sharpness SUBCOMMAND [--flags]``.

Each subcommand is a module of this package with absl flags and ``run()``;
only the chosen one is imported, so each defines its flags on absl's global
``FLAGS`` alone.  ``python scripts/<name>.py`` runs the same module.  The
experiment a subcommand runs is ``tf_sharpness.experiments.<name>``, except
``nsgd``'s, ``nsgd_table``: ``tf_sharpness.nsgd`` is the optimizer.  The
library (everything outside ``tf_sharpness.cli``) never imports absl flags.
"""

from __future__ import annotations

import importlib
import os
import sys

SUBCOMMANDS = {  # name (= its module here, its scripts/NAME.py and, for the experiments,
                # tf_sharpness/experiments/NAME.py but nsgd_table.py) -> help
    "train": "Train a model and track its Hessian spectrum.",
    "phase": "Early-training phase diagram, Kalra & Barkeshli.",
    "sweep": "Sharpness vs learning rate and batch size, Jastrzebski Fig. 1.",
    "sweep_report": "Tables of a sweep's JSON.",
    "eos": "Edge of stability under full-batch GD, Cohen et al.",
    "eos_report": "Tables of an EoS JSON.",
    "nsgd": "NSGD vs SGD (and SAM) at equal training loss, Jastrzebski Table 1.",
    "walk": "A walk with SGD, Xing et al.: learning rate x batch size.",
    "step_length": "Is the SGD step too large along e1?",
    "edge_quantities": "Which curvature sits at 2/eta under SGD.",
    "self_stabilization": "Does grad lambda_1 align with the loss gradient at the EoS.",
    "measure": "Measure saved runs again at their last checkpoint (lambda_max on all data).",
    "report": "Tables of any experiment's JSON (report FILE), or one run's trajectory.",
}


def usage() -> str:
  width = max(map(len, SUBCOMMANDS))
  lines = ["usage: tf-sharpness SUBCOMMAND [--flag=value ...] [--flagfile=FILE]",
           "       tf-sharpness SUBCOMMAND --help   (the subcommand's flags)", "",
           "subcommands:"]
  lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  name = argv[1].replace("-", "_")
  if name not in SUBCOMMANDS:
    print(f"tf-sharpness: unknown subcommand {argv[1]!r}\n\n{usage()}", file=sys.stderr)
    sys.exit(2)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  module = importlib.import_module(f"tf_sharpness.cli.{name}")
  sys.argv = [f"tf-sharpness {name}", *argv[2:]]
  module.run()
