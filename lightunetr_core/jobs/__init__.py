"""Background-job protocol: JSON events on stdout, cancellation, exit codes — both halves.

A job (``lightunetr train``, ``lightunetr segment`` ...) run with ``--events json`` writes one JSON
object per line on stdout; humans get a progress display on stderr. The schema is documented in the
README ("Job protocol") and in :mod:`lightunetr_core.jobs.events`. :mod:`lightunetr_core.jobs.runner`
starts such a job in a background process, reads its events, cancels it and kills its process tree
(the Slicer modules use it; it is imported on its own: ``from lightunetr_core.jobs import runner``).
"""

from lightunetr_core.jobs.cancel import CancelToken, JobCancelled
from lightunetr_core.jobs.events import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_OK,
    EVENT_SCHEMA_VERSION,
    EventWriter,
    parse_event,
)

__all__ = [
    "CancelToken",
    "JobCancelled",
    "EventWriter",
    "parse_event",
    "EVENT_SCHEMA_VERSION",
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_BAD_INPUT",
    "EXIT_CANCELLED",
]
