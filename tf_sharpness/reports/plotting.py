"""matplotlib for the experiment scripts' figures, when it is installed.

matplotlib is an optional dependency (``pip install -e ".[experiments]"``):
the scripts write their JSON and tables without it and only skip the figure.
"""

from typing import Any


def pyplot() -> Any:
  """``matplotlib.pyplot`` on the file-only Agg backend, or None (with a
  message saying how to install it) when matplotlib is missing."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib is not installed: no plot (pip install -e '.[experiments]')")
    return None
  return plt


def equal_loss_axis(ax: Any, loss: float) -> None:
  """Training loss on the x axis, decreasing to the right, with the loss at
  which runs are compared drawn dotted."""
  ax.axvline(loss, color="k", linestyle=":", linewidth=1)
  ax.invert_xaxis()
  ax.set_xlabel("training loss (decreasing →)")
