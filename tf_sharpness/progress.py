"""Progress lines for long measurements.

The spectral methods take an optional ``progress`` callable that receives a
``lanczos.Progress`` after every step.  ``LogProgress`` turns that into a log
line at most every ``seconds`` (the first after ``seconds``), so a short
measurement stays silent and a long one says how far it is:

    step 0: top-5 eigenpairs: 12 HVPs, slowest residual 3.1e-02 (tol 1e-03), 10.4 s
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from tf_sharpness.curvature.lanczos import Progress

log = logging.getLogger("tf_sharpness")


class LogProgress:
  """A ``progress`` callable that emits a line every ``seconds`` (through
  ``emit``, default the "tf_sharpness" logger's ``info``)."""

  def __init__(self, prefix: str = "", seconds: float = 10.0,
               emit: Callable[[str], None] | None = None):
    self.prefix = prefix
    self.seconds = seconds
    self.emit = emit or log.info
    self._last = time.perf_counter()
    self.lines = 0

  def __call__(self, p: Progress) -> None:
    now = time.perf_counter()
    if now - self._last < self.seconds and not (p.done and self.lines):
      return
    self._last = now
    self.lines += 1
    self.emit(self.prefix + describe(p))


def describe(p: Progress) -> str:
  text = f"{p.method}: {p.num_matvecs} HVPs"
  if p.worst_residual is not None:
    text += f", slowest residual {p.worst_residual:.1e}"
    if p.tolerance is not None:
      text += f" (tol {p.tolerance:.0e})"
  text += f", {p.seconds:.1f} s"
  return text + (" (done)" if p.done else "")
