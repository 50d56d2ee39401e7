"""Ctrl-C handling for commands that must not lose work: hold signals during critical steps.

:class:`InterruptGuard` turns SIGINT (and the other signals it is given, e.g. SIGTERM) into
:class:`KeyboardInterrupt`, except inside :meth:`InterruptGuard.deferred` blocks: a signal
arriving there is held and raised when the block ends. So a step such as "validate an event
and hand it to the producer" or "start a child process and register its cleanup" either
happens whole or not at all, while blocking waits (reading stdin, sleeping) stay
interruptible.

>>> import signal
>>> with InterruptGuard((signal.SIGINT,)) as guard:
...     with guard.deferred():
...         pass  # a SIGINT here would be raised as KeyboardInterrupt on leaving the block
>>> guard.received is None
True
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any


class InterruptGuard:
    """Raise :class:`KeyboardInterrupt` on ``signals``, but never inside a :meth:`deferred`
    block; restore the previous handlers on exit.

    Handlers can only be installed from the main thread; elsewhere the guard does nothing
    (the process's own handlers stay in place). With ``raise_once``, only the first signal
    raises; later ones are ignored (and ``note``-d), so cleanup after the first Ctrl-C is
    never interrupted half-way.

    Attributes
    ----------
    received
        The first signal number received while the guard was installed, or ``None``.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGINT,), *,
                 raise_once: bool = False) -> None:
        self.signals = tuple(signals)
        self.raise_once = raise_once
        self.received: int | None = None
        self._depth = 0
        self._pending = False
        self._raised = False
        self._note: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def exit_code(self) -> int:
        """The shell's exit code for the signal received: 128 + its number (130 for SIGINT,
        also when the interrupt did not come from a signal)."""
        return 128 + (self.received if self.received is not None else signal.SIGINT)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._depth or (self.raise_once and self._raised):
            self._pending = not (self.raise_once and self._raised)
            if self._note:
                # os.write, not print: a handler may run in the middle of another print
                with contextlib.suppress(OSError):
                    os.write(2, f"\n{self._note}\n".encode())
            return
        self._raised = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self, note: str | None = None) -> Iterator[None]:
        """Hold signals until the block ends, then raise :class:`KeyboardInterrupt` (only if
        the block itself did not raise). ``note`` is written to stderr when one is held (or,
        with ``raise_once``, ignored)."""
        self._depth += 1
        previous_note, self._note = self._note, note or self._note
        try:
            yield
        finally:
            self._depth -= 1
            self._note = previous_note
        if self._depth == 0 and self._pending:
            self._pending = False
            self._raised = True
            raise KeyboardInterrupt
