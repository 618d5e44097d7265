"""Ctrl-C (SIGINT) and SIGTERM, handled alike by every command.

SIGTERM is what ``kill``, Slurm at its time limit, Kubernetes, ``docker stop`` and systemd
send. srgan treats it like Ctrl-C: ``srgan upscale`` stops at once and cleans up its
temporary files (``sigterm_as_interrupt``); ``srgan train`` stops after the current step
and saves (``deferred_interrupt``). Either way the command ends with ``Interrupted``, and
the CLI exits with the shell's status for the signal: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command was stopped by signal ``signum`` (SIGINT or SIGTERM), after saving
    whatever had to be saved. A KeyboardInterrupt, so code that handles Ctrl-C handles it."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.signum = int(signum)


def exit_status(error: KeyboardInterrupt) -> int:
    """128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports it."""
    return 128 + getattr(error, "signum", signal.SIGINT)


def describe(signum: int) -> str:
    """``interrupted`` (Ctrl-C) or ``terminated`` (SIGTERM): the word the CLI prints."""
    return "terminated" if signum == signal.SIGTERM else "interrupted"


def sigterm_as_interrupt() -> None:
    """From now on SIGTERM raises ``Interrupted(SIGTERM)`` as Ctrl-C raises
    KeyboardInterrupt, so ``finally`` blocks and ``except KeyboardInterrupt`` clean up."""

    def interrupt(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, interrupt)


@contextlib.contextmanager
def deferred_interrupt(on_interrupt: Callable[[int], None]) -> Iterator[None]:
    """Turn the first Ctrl-C or SIGTERM into ``on_interrupt(signum)`` (the training loop then
    stops cleanly after the current step); the handlers in place before are back at once,
    so a second signal acts as it did before (a second Ctrl-C interrupts at once).
    Only in the main thread, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # None: a handler not installed from Python; the default action is the closest match
    previous = {s: signal.getsignal(s) or signal.SIG_DFL for s in STOP_SIGNALS}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    def handler(signum, frame):
        restore()
        on_interrupt(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        restore()
