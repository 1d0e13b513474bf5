"""The command line: ``tf-sharpness SUBCOMMAND [--flags]``.

Each subcommand is a module of this package with absl flags and ``run()``;
only the chosen one is imported, so each defines its flags on absl's global
``FLAGS`` alone.  ``python scripts/<name>.py`` runs the same modules.  The
library (everything outside ``tf_sharpness.cli``) never imports absl flags.
"""

from __future__ import annotations

import importlib
import os
import sys

SUBCOMMANDS = {
    "train": ("train", "Train a model and track its Hessian spectrum (scripts/train.py)."),
    "phase": ("phase", "Early-training phase diagram, Kalra & Barkeshli (scripts/phase_diagram.py)."),
    "sweep": ("sweep", "Sharpness vs learning rate and batch size, Jastrzebski Fig. 1 "
                       "(scripts/sharpness_vs_lr_batch.py)."),
    "sweep_report": ("sweep_report", "Tables of a sweep's JSON (scripts/sweep_report.py)."),
    "eos": ("eos", "Edge of stability under full-batch GD, Cohen et al. "
                   "(scripts/edge_of_stability.py)."),
    "eos_report": ("eos_report", "Tables of an EoS JSON (scripts/eos_report.py)."),
    "nsgd": ("nsgd", "NSGD vs SGD (and SAM) at equal training loss (scripts/nsgd_table.py)."),
    "walk": ("walk", "A walk with SGD, Xing et al. (scripts/walk_with_sgd.py)."),
    "step_length": ("step_length", "Is the SGD step too large along e1? "
                                   "(scripts/step_length.py)."),
    "edge_quantities": ("edge_quantities", "Which curvature sits at 2/eta under SGD "
                                           "(scripts/edge_quantities.py)."),
    "report": ("report", "Tables of any experiment's JSON (report FILE), or one run's "
                         "trajectory (scripts/trajectory_report.py)."),
}


def usage() -> str:
  width = max(map(len, SUBCOMMANDS))
  lines = ["usage: tf-sharpness SUBCOMMAND [--flag=value ...] [--flagfile=FILE]",
           "       tf-sharpness SUBCOMMAND --help   (the subcommand's flags)", "",
           "subcommands:"]
  lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
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
  module = importlib.import_module(f"tf_sharpness.cli.{SUBCOMMANDS[name][0]}")
  sys.argv = [f"tf-sharpness {name}", *argv[2:]]
  module.run()
