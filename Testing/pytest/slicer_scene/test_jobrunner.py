"""The generic job runner with a REAL subprocess speaking the lightunetr_core job protocol."""

import os
import sys
import time

import pytest

from lightunetr_core.jobs import runner as jobrunner

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "job_script.py")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _runner(*extra, **kw):
    return jobrunner.JobRunner([sys.executable, "-u", SCRIPT, *extra], name="test", **kw)


def test_progress_events_logs_and_outputs():
    seen = []
    finished = []
    r = _runner("--steps", "6", "--sleep", "0.02", on_event=seen.append, on_finished=finished.append)
    r.start()
    assert r.wait(timeout=60) == jobrunner.COMPLETED
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    progress = [e for e in seen if e["event"] == "progress"]
    assert [e["done"] for e in progress] == [1, 2, 3, 4, 5, 6]
    assert all(e["eta_s"] is not None for e in progress)
    assert r.fraction == 1.0 and r.stage == "inference"
    assert "a plain log line" in r.log_lines and "not json on stdout" in r.log_lines
    assert r.output_paths("labelmap") == ["/nonexistent/result.nrrd"]
    assert finished == [r] and r.returncode == 0
    assert not os.path.exists(os.path.dirname(r.cancel_file)), "job temp folder left behind"


def test_failure_reports_the_jobs_message():
    r = _runner("--steps", "2", "--sleep", "0.01", "--fail").start()
    assert r.wait(timeout=60) == jobrunner.FAILED
    assert "synthetic failure" in r.error_message and r.error_kind == "bad_input"


def test_crash_without_events_reports_exit_code_and_stderr(tmp_path):
    r = jobrunner.JobRunner([sys.executable, "-c", "import sys; print('boom happened', file=sys.stderr); sys.exit(7)"]).start()
    assert r.wait(timeout=60) == jobrunner.FAILED
    assert "code 7" in r.error_message and "boom happened" in r.error_message


def test_cancel_by_cancel_file_is_cooperative(tmp_path):
    r = _runner("--steps", "100000", "--sleep", "0.01").start()
    while not r.events or r.events[-1]["event"] != "progress":
        r.poll()
        time.sleep(0.01)
    r.cancel(grace_s=30)
    assert r.wait(timeout=60) == jobrunner.CANCELLED
    assert r.returncode == 3  # the job saw the cancel file and exited by itself
    assert any(e["event"] == "cancelled" for e in r.events)


@pytest.mark.skipif(os.name == "nt", reason="POSIX process checks")
def test_cancel_kills_a_hung_job_and_its_grandchild(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    r = _runner("--steps", "100000", "--sleep", "0.01", "--ignore-cancel", "--grandchild", str(pidfile)).start()
    while not pidfile.exists() or not pidfile.read_text():
        assert r.poll()
        time.sleep(0.01)
    grandchild = int(pidfile.read_text())
    child = r.process.pid
    assert _alive(grandchild) and _alive(child)
    r.cancel(grace_s=0.3)
    assert r.wait(timeout=60) == jobrunner.CANCELLED
    deadline = time.time() + 10
    while _alive(grandchild) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "grandchild process left behind"
    assert not _alive(child)


def test_descendants_are_found(tmp_path):
    pidfile = tmp_path / "gc.pid"
    r = _runner("--steps", "100000", "--sleep", "0.01", "--grandchild", str(pidfile)).start()
    while not pidfile.exists() or not pidfile.read_text():
        time.sleep(0.01)
    assert int(pidfile.read_text()) in jobrunner.descendant_pids(r.process.pid)
    r.kill()
    assert r.wait(timeout=60) == jobrunner.CANCELLED


def test_job_environment_points_at_lightunetr_core():
    env = jobrunner.job_environment(cpu_only=True)
    core = jobrunner.core_pythonpath()
    assert os.path.isdir(os.path.join(core, "lightunetr_core"))
    assert env["PYTHONPATH"].split(os.pathsep)[0] == core
    assert env["CUDA_VISIBLE_DEVICES"] == "-1"
    cmd = jobrunner.core_command("segment", "a.nrrd", python="py")
    assert cmd == ["py", "-u", "-m", "lightunetr_core", "segment", "a.nrrd"]


def test_missing_executable_raises_and_cleans_up(tmp_path):
    r = jobrunner.JobRunner([str(tmp_path / "no-such-python"), "-c", "pass"])
    own = os.path.dirname(r.cancel_file)
    with pytest.raises(OSError):
        r.start()
    assert r.status == jobrunner.FAILED and not os.path.exists(own)
