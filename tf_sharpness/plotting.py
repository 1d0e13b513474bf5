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
