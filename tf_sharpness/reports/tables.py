"""Markdown tables of the report scripts: one way to print a value, a
range, a slope and a table's rule, so that the same number reads the same
in every report.

A missing value (None) prints as an em dash.
"""

from typing import Sequence

MISSING = "—"


def fixed(value: float | None, digits: int) -> str:
  """``value`` with ``digits`` decimals."""
  return MISSING if value is None else f"{value:.{digits}f}"


def significant(value: float | None, digits: int = 3) -> str:
  """``value`` with ``digits`` significant digits (losses, which span
  orders of magnitude)."""
  return MISSING if value is None else f"{value:.{digits}g}"


def slope(value: float | None) -> str:
  """A slope per epoch or per step: two decimals from 1 up, three
  significant digits below (a slope per step is often 0.00x)."""
  if value is None:
    return MISSING
  return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def span(low: float | None, high: float | None, digits: int = 1) -> str:
  """The range low–high, or a dash when there is nothing in it."""
  if low is None or high is None:
    return MISSING
  return f"{low:.{digits}f}–{high:.{digits}f}"


def header(columns: Sequence[str]) -> str:
  """The header row and the rule under it."""
  return "| " + " | ".join(columns) + " |\n" + "| --- " * len(columns) + "|"
