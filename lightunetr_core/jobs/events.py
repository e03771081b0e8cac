"""JSON-lines job events.

Every event is one line of JSON on stdout::

    {"event": "progress", "schema": 1, "time": 1764219000.123, "job": "train", ...fields}

Common events and their fields (all jobs):

``started``    ``total`` (work units, e.g. iterations or cases), ``config`` (dict), ``pid``
``stage``      ``stage`` (short name: "preprocess", "inference", "write" ...), ``message``
``progress``   ``done``, ``total``, ``fraction`` (0..1), ``rate`` (units/s), ``eta_s``, plus job fields
               (training: ``iteration``, ``loss`` dict of loss terms, ``lr``)
``validation`` ``iteration``, ``dice`` (mean), ``per_class`` (dict), ``best`` (bool)
``checkpoint`` ``path``, ``iteration``
``output``     ``path``, ``kind`` ("labelmap", "segmentation", "probabilities", "uncertainty", "bundle")
``finished``   ``elapsed_s`` and a job summary
``cancelled``  ``message``, ``checkpoint`` (path or null)
``error``      ``message`` (what went wrong and what to do), ``kind`` ("bad_input" | "internal")
``log``        ``level``, ``message``
``iteration``  ``iteration``, ``loss``, ``lr``: one per training iteration, written only to the run's
               ``events.jsonl`` (not to stdout), for the training log and its plot

Exit codes: :data:`EXIT_OK`, :data:`EXIT_ERROR`, :data:`EXIT_BAD_INPUT`, :data:`EXIT_CANCELLED`.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from typing import Any, TextIO

EVENT_SCHEMA_VERSION = 1
_MAX_PENDING = 10_000

EXIT_OK = 0
EXIT_ERROR = 1
#: The input or configuration was rejected before any work was done; nothing was written.
EXIT_BAD_INPUT = 2
#: The job stopped on request (signal or cancel file); a checkpoint was written where the job has one.
EXIT_CANCELLED = 3


def parse_event(line: str) -> dict | None:
    """One output line → its event record, or None for any other line (a log line, stray output, a damaged
    line). The job runner reads a job's stdout with it, the run log a run's ``events.jsonl``."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "event" in record else None


def _jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and non-finite floats into strict JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        # Strict JSON has no NaN/Infinity; readers in other languages choke on them.
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class EventWriter:
    """Writes job events as JSON lines (machine stream) and optionally a human display on stderr.

    Args:
        job: job name put in every event ("train", "segment", ...).
        json_stream: where JSON lines go; ``None`` disables them (plain CLI use).
        human_stream: where human-readable progress goes; ``None`` disables it. On a terminal progress is
            one bar redrawn with ``\\r``; elsewhere (a log file, ``nohup``, a cluster job) every event is a
            timestamped line.

    Besides the streams, a job can keep its events: :meth:`keep_in` appends every event (also the ones
    emitted before, and the ``iteration`` records that never go to stdout) to a JSON-lines file, flushed
    line by line so it survives a crash; :meth:`add_listener` calls a function with every event.
    """

    def __init__(
        self,
        job: str,
        json_stream: TextIO | None = None,
        human_stream: TextIO | None = None,
    ) -> None:
        self.job = job
        self.json_stream = json_stream
        self.human_stream = human_stream
        self._lock = threading.Lock()
        self._progress_line_open = False
        self._human_is_terminal = bool(human_stream is not None and getattr(human_stream, "isatty", lambda: False)())
        self._file: TextIO | None = None
        self._pending: list[dict] | None = []  # events before keep_in(): replayed into the file
        self._listeners: list = []

    @classmethod
    def for_cli(cls, job: str, events: str) -> "EventWriter":
        """``events="json"``: JSON on stdout, progress bar on stderr only when it is a terminal.
        ``events="human"``: no JSON, human output on stderr."""
        if events == "json":
            human = sys.stderr if sys.stderr.isatty() else None
            return cls(job, json_stream=sys.stdout, human_stream=human)
        return cls(job, json_stream=None, human_stream=sys.stderr)

    def emit(self, event: str, *, record_only: bool = False, **fields: Any) -> dict:
        """Write one event. ``record_only``: only to the kept file and the listeners (per-iteration records)."""
        record = {"event": event, "schema": EVENT_SCHEMA_VERSION, "time": round(time.time(), 3), "job": self.job}
        record.update(_jsonable(fields))
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            if self.json_stream is not None and not record_only:
                self.json_stream.write(line + "\n")
                self.json_stream.flush()
            if self.human_stream is not None and not record_only:
                self._write_human(record)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            elif self._pending is not None:
                self._pending.append(record)
                if len(self._pending) > _MAX_PENDING:  # nobody keeps this job's events: stop buffering
                    self._pending = None
            listeners = list(self._listeners)
        for listener in listeners:
            listener(record)
        return record

    def keep_in(self, path) -> None:
        """Append every event from now on, and the ones already emitted, to the JSON-lines file ``path``."""
        from pathlib import Path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file = open(path, "a", encoding="utf-8")
            for record in self._pending or []:
                self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()
            self._pending = None

    @property
    def keeping(self) -> bool:
        """True once :meth:`keep_in` chose a file."""
        return self._file is not None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def add_listener(self, callback) -> None:
        """``callback(record)`` after every event (on the emitting thread)."""
        self._listeners.append(callback)

    # Convenience wrappers keep the field names of the schema in one place.
    def started(self, total: int | None = None, **fields: Any) -> dict:
        import os

        return self.emit("started", total=total, pid=os.getpid(), **fields)

    def stage(self, stage: str, message: str = "", **fields: Any) -> dict:
        return self.emit("stage", stage=stage, message=message, **fields)

    def progress(self, done: int, total: int, rate: float | None = None, **fields: Any) -> dict:
        fraction = done / total if total else None
        eta = (total - done) / rate if rate and rate > 0 and total else None
        return self.emit("progress", done=done, total=total, fraction=fraction, rate=rate, eta_s=eta, **fields)

    def error(self, message: str, kind: str = "internal", **fields: Any) -> dict:
        return self.emit("error", message=message, kind=kind, **fields)

    def log(self, message: str, level: str = "info") -> dict:
        return self.emit("log", level=level, message=message)

    def _write_human(self, record: dict) -> None:
        if not self._human_is_terminal:
            self._write_human_line(record)
            return
        stream = self.human_stream
        event = record["event"]
        if event == "progress":
            done, total = record.get("done", 0), record.get("total") or 0
            width = 30
            filled = int(width * done / total) if total else 0
            eta = record.get("eta_s")
            eta_text = f" ETA {eta:6.0f}s" if isinstance(eta, (int, float)) else ""
            extra = ""
            if isinstance(record.get("loss"), dict) and "total" in record["loss"]:
                extra = f" loss {record['loss']['total']:.4f}"
            line = f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}{eta_text}{extra}"
            stream.write(line)
            self._progress_line_open = True
        else:
            if self._progress_line_open:
                stream.write("\n")
                self._progress_line_open = False
            message = record.get("message") or ""
            details = {k: v for k, v in record.items() if k not in ("event", "schema", "time", "job", "message")}
            if event in ("stage", "log", "error", "cancelled") and message:
                stream.write(f"{event}: {message}\n")
            else:
                stream.write(f"{event}: {json.dumps(details, separators=(',', ':'))}\n")
        stream.flush()

    def _write_human_line(self, record: dict) -> None:
        """One timestamped line per event, nothing redrawn (logs keep every line intact)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["time"]))
        event = record["event"]
        if event == "progress":
            done, total = record.get("done", 0), record.get("total") or 0
            text = f"{done}/{total}" + (f" ({100 * done / total:.0f} %)" if total else "")
            if isinstance(record.get("eta_s"), (int, float)):
                text += f", about {record['eta_s']:.0f} s left"
            if isinstance(record.get("loss"), dict) and isinstance(record["loss"].get("total"), (int, float)):
                text += f", loss {record['loss']['total']:.4f}"
        elif record.get("message"):
            text = record["message"]
        else:
            details = {k: v for k, v in record.items() if k not in ("event", "schema", "time", "job")}
            text = json.dumps(details, separators=(",", ":"))
        self.human_stream.write(f"{stamp} {self.job} {event}: {text}\n")
        self.human_stream.flush()
