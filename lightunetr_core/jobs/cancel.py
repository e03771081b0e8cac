"""Cooperative cancellation for long jobs.

A job polls :meth:`CancelToken.cancelled` at safe points (between iterations, between windows) and
stops cleanly: it writes a checkpoint where it has one and exits with ``EXIT_CANCELLED``.
Cancellation is requested by SIGINT/SIGTERM or by creating the cancel file, which works on every
platform (Windows cannot deliver SIGINT to a child without a console).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path


class JobCancelled(Exception):
    """Raised at a safe point after cancellation was requested."""


class CancelToken:
    """Cancellation flag set by signals or by the existence of ``cancel_file``.

    Args:
        cancel_file: optional path; when the file exists, the job is cancelled.
    """

    def __init__(self, cancel_file: str | os.PathLike | None = None) -> None:
        self.cancel_file = Path(cancel_file) if cancel_file else None
        self._event = threading.Event()
        self.reason: str | None = None

    def request(self, reason: str = "cancel requested") -> None:
        self.reason = self.reason or reason
        self._event.set()

    def cancelled(self) -> bool:
        if not self._event.is_set() and self.cancel_file is not None and self.cancel_file.exists():
            self.request(f"cancel file {self.cancel_file} found")
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled(self.reason or "cancelled")

    def install_signal_handlers(self) -> None:
        """Turn SIGINT/SIGTERM into a cancel request (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, _frame):
            self.request(f"received {signal.Signals(signum).name}")

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        if hasattr(signal, "SIGBREAK"):  # Windows console break
            signal.signal(signal.SIGBREAK, handler)
