"""InterruptGuard: a Ctrl-C swallowed by a ``__del__`` still stops the run."""

import signal

import pytest

from conftest import SignalsInDel
from tf_sharpness.interrupts import InterruptGuard


pytestmark = pytest.mark.usefixtures("default_sigint")


def test_without_the_guard_a_ctrl_c_in_del_is_lost():
  SignalsInDel()  # no KeyboardInterrupt reaches here: the scenario is real


def test_a_swallowed_ctrl_c_is_raised_at_the_next_check():
  with InterruptGuard() as guard:
    guard.check()  # nothing received yet
    SignalsInDel()
    with pytest.raises(KeyboardInterrupt):
      guard.check()
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_ctrl_c_is_still_raised_at_once():
  with InterruptGuard() as guard:
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
      sum(range(10))
    assert guard.received


def test_a_handler_of_the_embedding_program_is_left_alone():
  seen = []
  mine = lambda signum, frame: seen.append(signum)
  signal.signal(signal.SIGINT, mine)
  with InterruptGuard() as guard:
    signal.raise_signal(signal.SIGINT)
    sum(range(10))
    guard.check()  # the program's handler took it; the guard saw nothing
  assert seen == [signal.SIGINT] and signal.getsignal(signal.SIGINT) is mine
