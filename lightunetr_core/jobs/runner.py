"""The other half of the job protocol: run a ``lightunetr`` job (segment, train, ...) in a background process
and follow it. Qt-free; the Slicer modules drive it from a ``qt.QTimer``.

A job is a real subprocess (``PythonSlicer -m lightunetr_core <command> ... --events json
--cancel-file F``). A reader thread parses the JSON event lines of its stdout
(:func:`~lightunetr_core.jobs.events.parse_event`, schema in ``events.py``) into a queue; the owner calls :meth:`JobRunner.poll` on its own
thread (a ``qt.QTimer`` in Slicer, a loop in scripts and tests) and the callbacks run there, so they may
touch MRML. Nothing here blocks the GUI unless :meth:`wait` is called.

Cancel: the cancel file is created first (the job stops at a safe point and writes its checkpoint);
after ``grace_s`` the whole process tree is terminated, then killed (psutil when present, else the
process group on POSIX / ``taskkill /T`` on Windows). ``PythonSlicer`` is a launcher in front of the
real interpreter, so killing only the direct child would leave the worker running.

Both Slicer modules: ``from lightunetr_core.jobs import runner``; the exit codes are the ones
``events.py`` defines (one vocabulary for both halves).
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

from lightunetr_core.jobs.events import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, parse_event

logger = logging.getLogger("LightUNETR")

__all__ = ["JobRunner", "core_command", "core_pythonpath", "job_environment", "poll_until_done", "python_executable",
           "descendant_pids", "terminate_tree", "no_window_kwargs", "EXIT_OK", "EXIT_ERROR", "EXIT_BAD_INPUT",
           "EXIT_CANCELLED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "FINAL_STATES"]

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = "pending", "running", "completed", "failed", "cancelled"
FINAL_STATES = (COMPLETED, FAILED, CANCELLED)


def python_executable() -> str:
    """Interpreter for jobs: Slicer's ``PythonSlicer`` launcher when this process is a running Slicer (its
    ``slicer`` module has an ``app``; looked up in ``sys.modules``, never imported), else ``sys.executable``
    (tests, slicer-core, plain Python). Inside Slicer ``sys.executable`` is the application, not a Python."""
    host = sys.modules.get("slicer")
    if host is not None and hasattr(host, "app"):
        exe = shutil.which("PythonSlicer", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        if exe:
            return exe
    return sys.executable


def core_pythonpath() -> str | None:
    """Folder that contains the ``lightunetr_core`` package (it is installed next to the scripted
    modules by the extension, which is on Slicer's ``sys.path`` but not on ``PythonSlicer``'s)."""
    import importlib.util

    spec = importlib.util.find_spec("lightunetr_core")
    if spec is None or not spec.origin:
        return None
    return os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))


def core_command(command: str, *args: str, python: str | None = None) -> list[str]:
    """``[python, -u, -m, lightunetr_core, command, *args]``."""
    return [python or python_executable(), "-u", "-m", "lightunetr_core", command, *[str(a) for a in args]]


def poll_until_done(poll: Callable[[], bool], timeout: float | None, what: str, interval: float = 0.05) -> None:
    """Call ``poll()`` (True while running) every ``interval`` s until it returns False, on this thread (the
    callbacks of every job here run from its ``poll``). Raises ``TimeoutError`` naming ``what`` when
    ``timeout`` passes first. The ``wait()`` of every job object uses it."""
    end = None if timeout is None else time.monotonic() + timeout
    while poll():
        if end is not None and time.monotonic() > end:
            raise TimeoutError(f"{what} still running after {timeout} s")
        time.sleep(interval)


def no_window_kwargs() -> dict:
    """``subprocess`` keyword arguments that keep a child process from opening a console window on
    Windows (Slicer is a GUI application; every ``taskkill`` or ``python`` child would flash one)."""
    if os.name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)}
    return {}


def job_environment(extra: dict | None = None, cpu_only: bool = False) -> dict:
    env = dict(os.environ)
    core = core_pythonpath()
    if core:
        env["PYTHONPATH"] = core + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if cpu_only:
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


class JobRunner:
    """One background job.

    Args:
        args: full command line (see :func:`core_command`); ``--events json`` and ``--cancel-file`` are
            appended unless already present.
        on_event: ``f(event_dict)`` for each JSON event (called from :meth:`poll`).
        on_log: ``f(line)`` for non-JSON output lines (stderr and stray stdout).
        on_finished: ``f(runner)`` once, after the process ended (called from :meth:`poll`).
        grace_s: seconds between the cancel file and terminating the process tree.
        protocol: False for a command that does not speak the job protocol (``pip``): no ``--events`` /
            ``--cancel-file`` options are added, every output line is a log line and cancel terminates
            the process tree at once.
    """

    def __init__(
        self,
        args: list[str],
        env: dict | None = None,
        cwd: str | None = None,
        on_event: Callable[[dict], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_finished: Callable[["JobRunner"], None] | None = None,
        grace_s: float = 10.0,
        name: str = "job",
        protocol: bool = True,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.env = env if env is not None else job_environment()
        self.cwd = cwd
        self.on_event, self.on_log, self.on_finished = on_event, on_log, on_finished
        self.grace_s = grace_s if protocol else 0.0
        self.protocol = protocol
        self._own_dir = tempfile.mkdtemp(prefix="LightUNETR-job-")
        self.cancel_file = None
        if protocol:
            if "--cancel-file" in self.args:
                self.cancel_file = self.args[self.args.index("--cancel-file") + 1]
            else:
                self.cancel_file = os.path.join(self._own_dir, "cancel")
                self.args += ["--cancel-file", self.cancel_file]
            if "--events" not in self.args:
                self.args += ["--events", "json"]
        self.process: subprocess.Popen | None = None
        self.status = PENDING
        self.returncode: int | None = None
        self.events: list[dict] = []
        self.log_lines: list[str] = []  # every non-event output line, stdout and stderr
        self.stdout_lines: list[str] = []  # the non-event lines of stdout only
        self.outputs: list[dict] = []
        self.fraction: float | None = None
        self.stage: str = ""
        self.eta_s: float | None = None
        self.message: str = ""
        self.error_message: str = ""
        self.error_kind: str = ""
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._cancel_requested = False
        self._finished_reported = False
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- start / read
    def start(self) -> "JobRunner":
        if self.process is not None:
            raise RuntimeError("job already started")
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | no_window_kwargs()["creationflags"]
        else:
            kwargs["start_new_session"] = True  # own process group: the whole tree can be signalled
        logger.info("LightUNETR %s: %s", self.name, " ".join(self.args))
        try:
            self.process = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                cwd=self.cwd,
                **kwargs,
            )
        except OSError:
            self.status = FAILED
            self._cleanup_files()
            raise
        self.status = RUNNING
        self.started_at = time.time()
        for stream, is_stdout in ((self.process.stdout, True), (self.process.stderr, False)):
            t = threading.Thread(target=self._reader, args=(stream, is_stdout), daemon=True)
            t.start()
            self._threads.append(t)
        waiter = threading.Thread(target=self._waiter, daemon=True)
        waiter.start()
        self._threads.append(waiter)
        return self

    def _reader(self, stream, is_stdout: bool) -> None:
        for raw in iter(stream.readline, b""):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("latin-1")
            line = line.rstrip("\r\n")
            if not line:
                continue
            record = parse_event(line) if self.protocol and is_stdout else None
            if record is not None:
                self._queue.put(("event", record))
                continue
            self._queue.put(("stdout" if is_stdout else "log", line))
        stream.close()

    def _waiter(self) -> None:
        rc = self.process.wait()
        for t in self._threads[:2]:
            t.join()
        self._queue.put(("exit", rc))

    # ---------------------------------------------------------------- main-thread side
    def poll(self) -> bool:
        """Process queued output on the caller's thread; returns True while the job is not finished."""
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "event":
                self._handle_event(payload)
            elif kind in ("log", "stdout"):
                self.log_lines.append(payload)
                if kind == "stdout":
                    self.stdout_lines.append(payload)
                if self.on_log:
                    self.on_log(payload)
            elif kind == "exit":
                self._handle_exit(payload)
        return self.status not in FINAL_STATES

    def _handle_event(self, ev: dict) -> None:
        self.events.append(ev)
        kind = ev.get("event")
        if kind == "progress":
            frac = ev.get("fraction")
            if frac is None and ev.get("total"):
                frac = ev.get("done", 0) / ev["total"]
            if isinstance(frac, (int, float)):
                self.fraction = max(0.0, min(1.0, float(frac)))
            self.eta_s = ev.get("eta_s")
        elif kind == "stage":
            self.stage = ev.get("stage") or ""
            self.message = ev.get("message") or self.stage
        elif kind == "output":
            self.outputs.append(ev)
        elif kind == "error":
            self.error_message = ev.get("message") or "error"
            self.error_kind = ev.get("kind") or ""
        elif kind in ("log",):
            self.message = ev.get("message") or self.message
        elif kind == "finished":
            self.fraction = 1.0
        if self.on_event:
            try:
                self.on_event(ev)
            except Exception:  # a GUI callback must not kill the job bookkeeping
                logger.exception("LightUNETR: event callback failed")

    def _handle_exit(self, rc: int) -> None:
        self.returncode = rc
        self.finished_at = time.time()
        if rc == EXIT_OK and not self._cancel_requested:
            self.status = COMPLETED
        elif rc == EXIT_CANCELLED or self._cancel_requested:
            self.status = CANCELLED
            self.message = "Cancelled."
        else:
            self.status = FAILED
            if not self.error_message:
                tail = [l for l in self.log_lines[-20:] if l.strip()]
                self.error_message = (
                    f"The {self.name} process exited with code {rc}." + ("\n" + "\n".join(tail[-5:]) if tail else "")
                )
        self._cleanup_files()
        if self.on_finished and not self._finished_reported:
            self._finished_reported = True
            self.on_finished(self)

    # ---------------------------------------------------------------- control
    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> str:
        """Block until the job has finished (polling on this thread); returns the final status.
        Raises ``TimeoutError`` when ``timeout`` passes first."""
        poll_until_done(self.poll, timeout, self.name, interval)
        return self.status

    def cancel(self, grace_s: float | None = None, block: bool = False) -> None:
        """Ask the job to stop: cancel file now, terminate the process tree after ``grace_s``, kill it
        after another 5 s. Non-blocking unless ``block``."""
        if self.process is None:
            self.status = CANCELLED
            return
        if self.status in FINAL_STATES:
            return
        self._cancel_requested = True
        if self.cancel_file:
            try:
                with open(self.cancel_file, "w", encoding="utf-8") as f:
                    f.write("cancel\n")
            except OSError:
                pass
        grace = self.grace_s if grace_s is None else grace_s
        t = threading.Thread(target=self._escalate, args=(grace,), daemon=True)
        t.start()
        if block:
            t.join()
            self.wait(timeout=30)

    def _escalate(self, grace: float) -> None:
        if self._wait_exit(grace):
            return
        logger.warning("LightUNETR %s: did not stop after the cancel file; terminating it", self.name)
        terminate_tree(self.process.pid, kill=False)
        if self._wait_exit(5.0):
            return
        terminate_tree(self.process.pid, kill=True)
        self._wait_exit(5.0)

    def _wait_exit(self, seconds: float) -> bool:
        try:
            self.process.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self, wait_s: float = 0.0) -> None:
        """Kill the whole tree immediately (module cleanup, application exit), wait up to ``wait_s`` for
        it to be gone, and remove the runner's own temporary folder."""
        if self.process is not None and self.process.poll() is None:
            self._cancel_requested = True
            terminate_tree(self.process.pid, kill=True)
            if wait_s:
                self._wait_exit(wait_s)
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        shutil.rmtree(self._own_dir, ignore_errors=True)

    # ---------------------------------------------------------------- summary
    @property
    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    def output_paths(self, kind: str | None = None) -> list[str]:
        return [o.get("path") for o in self.outputs if kind is None or o.get("kind") == kind]


def descendant_pids(pid: int) -> list[int]:
    """Children of ``pid`` (recursive) — psutil when available, else /proc on Linux, else []."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:
        return []
    if not os.path.isdir("/proc"):
        return []
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
            ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def terminate_tree(pid: int, kill: bool = False) -> None:
    """Terminate (or kill) ``pid`` and all its descendants."""
    children = descendant_pids(pid)
    if os.name == "nt":
        args = ["taskkill", "/T", "/PID", str(pid)] + (["/F"] if kill else [])
        subprocess.run(args, capture_output=True, **no_window_kwargs())
        return
    sig = signal.SIGKILL if kill else signal.SIGTERM
    try:
        import psutil

        procs = [psutil.Process(p) for p in children]
        for p in procs:
            try:
                p.kill() if kill else p.terminate()
            except psutil.Error:
                pass
    except ImportError:
        for child in children:
            try:
                os.kill(child, sig)
            except OSError:
                pass
    try:
        pgid = os.getpgid(pid)
        if pgid != os.getpgid(0):  # never signal our own group
            os.killpg(pgid, sig)  # the job's own process group (start_new_session)
    except OSError:
        pass
    try:
        os.kill(pid, sig)
    except OSError:
        pass
