"""Background-job protocol: JSON events on stdout, cancellation, exit codes.

A job (``lightunetr train``, ``lightunetr segment`` ...) run with ``--events json`` writes one JSON
object per line on stdout; humans get a progress display on stderr. The schema is documented in the
README ("Job protocol") and in :mod:`lightunetr_core.jobs.events`.
"""

from lightunetr_core.jobs.cancel import CancelToken, JobCancelled
from lightunetr_core.jobs.events import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_OK,
    EVENT_SCHEMA_VERSION,
    EventWriter,
)

__all__ = [
    "CancelToken",
    "JobCancelled",
    "EventWriter",
    "EVENT_SCHEMA_VERSION",
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_BAD_INPUT",
    "EXIT_CANCELLED",
]
