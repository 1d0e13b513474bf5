"""Ctrl-C that a long run cannot lose.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread is
at the next bytecode.  If that is inside a ``__del__`` or a weakref callback
(TensorFlow runs many while it saves a checkpoint), the interpreter prints
"Exception ignored in ..." and goes on, and a run of many steps never stops.
``InterruptGuard`` keeps the usual behaviour (the interrupt is raised at
once) and also remembers it: ``check()``, called once per training step,
raises ``KeyboardInterrupt`` again if one was received, so a swallowed
Ctrl-C stops the run at the next step boundary at the latest.
"""

from __future__ import annotations

import signal
import threading


class InterruptGuard:
  """Context manager: while active, SIGINT is recorded and then raised as
  ``KeyboardInterrupt`` as usual; ``check()`` re-raises a recorded one.

  It installs its handler only in the main thread and only over Python's
  default SIGINT handler, so a handler of the embedding program (a notebook,
  a test runner) is left alone; there ``check()`` never raises.
  """

  def __init__(self):
    self.received = False
    self._previous = None

  def _handle(self, signum, frame):
    self.received = True
    raise KeyboardInterrupt

  def check(self) -> None:
    if self.received:
      raise KeyboardInterrupt

  def __enter__(self) -> "InterruptGuard":
    if (threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
      self._previous = signal.signal(signal.SIGINT, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)
      self._previous = None
