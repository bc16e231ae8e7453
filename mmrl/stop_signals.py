"""Stop a training run cleanly on SIGTERM or SIGUSR1 (a scheduler's warning that the job is about to end).

SLURM sends SIGTERM before killing a job (and, with ``--signal=USR1@<seconds>``, SIGUSR1 ahead of its time limit;
submitit asks for that to requeue a job). :class:`StopSignals` records the signal instead of dying at once, the
trainer stops at its next env step, writes a checkpoint and then hands the signal on: to the handler that was
installed before (submitit's requeue, for example), else it exits with ``128 + signal number``, as a process
killed by the signal would report. A requeued job that runs with ``resume=auto`` and the same ``run_dir`` continues
from that checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

#: the signals a scheduler sends before it stops a job (SIGUSR2 is submitit's default preemption signal; the
#: user signals do not exist on Windows)
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)


class StopSignals:
    """Context manager: while active, :data:`STOP_SIGNALS` only set :attr:`received` (the first one wins).

    A signal the process ignores (``SIG_IGN``) stays ignored. Handlers can only be installed from the main thread;
    elsewhere (a launcher running jobs in threads) this does nothing and the signals keep their handlers."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.previous: dict[signal.Signals, Any] = {}
        """The handlers found on entering (put back on leaving), by signal."""

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def hand_on(self) -> None:
        """After the checkpoint, outside the context: pass the received signal to the handler that was there before
        (e.g. submitit's requeue), then exit with ``128 + signal number``; nothing when no signal came."""
        if self.received is None:
            return
        previous = self.previous.get(self.received)
        if callable(previous):
            previous(int(self.received), None)
        sys.exit(128 + int(self.received))
