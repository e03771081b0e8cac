"""Dependency installation and the environment report: real pip and real subprocesses, nothing blocks.

pip runs against a local folder of wheels (``--no-index --find-links``) and installs into a throw-away
``--target`` folder, so the test environment is never changed. The wheels are built here, so the test
needs no network.
"""

import base64
import hashlib
import importlib.metadata
import os
import sys
import time
import zipfile

import pytest

from lightunetr_core.jobs import runner as jobrunner
from LightUNETRSlicerLib import environment


def make_wheel(folder, name, version, requires=()):
    """A minimal pure-Python wheel ``name`` with one module; ``requires`` become Requires-Dist lines."""
    dist = name.replace("-", "_")
    path = os.path.join(folder, f"{dist}-{version}-py3-none-any.whl")
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}-{version}.dist-info/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: lightunetr-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(path, "w") as z:
        for arc, text in files.items():
            data = text.encode()
            z.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(data)}")
        record.append(f"{dist}-{version}.dist-info/RECORD,,")
        z.writestr(f"{dist}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture
def wheels(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    torch_version = importlib.metadata.version("torch")
    make_wheel(str(folder), "lightunetr-plain", "1.0")
    make_wheel(str(folder), "lightunetr-needs-new-torch", "1.0", ["torch>=99"])
    make_wheel(str(folder), "torch", "99.0")  # a "newer torch" pip could pick when nothing pins the installed one
    return str(folder), torch_version


def _install(requirements, wheels_dir, target, constraints=None):
    # The machine's own pip configuration (an index, a cap on torch) must not take part.
    install = environment.DependencyInstall(requirements, python=sys.executable, constraints=constraints,
                                            extra_args=["--no-index", "--find-links", wheels_dir, "--target", str(target)],
                                            extra_environment={"PIP_CONFIG_FILE": os.devnull})
    return install


def test_constraints_pin_the_installed_torch_numpy_scipy_simpleitk():
    text = environment.constraints_text()
    for dist in ("torch", "numpy", "scipy", "SimpleITK"):
        assert f"{dist}=={importlib.metadata.version(dist)}" in text.splitlines()
    assert environment.pip_requirements({"torch": "x", "monai": "y", "safetensors": "z"}) == [
        "monai" + environment.REQUIREMENTS["monai"], "safetensors" + environment.REQUIREMENTS["safetensors"]]


def test_install_runs_in_the_background_and_installs(tmp_path, wheels):
    wheels_dir, _ = wheels
    install = _install(["lightunetr-plain"], wheels_dir, tmp_path / "site")
    t0 = time.monotonic()
    install.start()
    assert time.monotonic() - t0 < 2.0 and install.status == "running"
    folder = install.folder
    assert os.path.isfile(os.path.join(folder, "constraints.txt"))
    assert install.wait(timeout=120) == "completed", install.log
    assert os.path.isfile(tmp_path / "site" / "lightunetr_plain" / "__init__.py")
    assert install.log and not os.path.exists(folder), "the constraints folder was left behind"
    assert install.restart_needed == []


def test_constraints_keep_the_installed_torch(tmp_path, wheels):
    """Unconstrained, pip takes the newer torch a package asks for; with our constraints it refuses, says
    why, and installs nothing."""
    wheels_dir, torch_version = wheels
    free = _install(["lightunetr-needs-new-torch"], wheels_dir, tmp_path / "free", constraints="")
    assert free.start().wait(timeout=120) == "completed", free.log
    assert os.path.isdir(tmp_path / "free" / "torch"), "without constraints pip installs the other torch"

    pinned = _install(["lightunetr-needs-new-torch"], wheels_dir, tmp_path / "pinned")
    assert f"torch=={torch_version}" in pinned.constraints
    assert pinned.start().wait(timeout=120) == "failed"
    assert "lightunetr-needs-new-torch" in pinned.message and "were kept" in pinned.message
    assert not os.path.exists(tmp_path / "pinned" / "torch")


def test_cancel_stops_pip(tmp_path, wheels):
    wheels_dir, _ = wheels
    install = _install(["lightunetr-plain"], wheels_dir, tmp_path / "site").start()
    pid = install.runner.process.pid
    install.cancel()
    assert install.wait(timeout=60) == "cancelled"
    assert install.runner.process.poll() is not None and jobrunner.descendant_pids(pid) == []


def test_nothing_to_install():
    install = environment.DependencyInstall([]).start()
    assert install.done and install.status == "completed" and install.runner is None


def test_changed_imported_packages():
    before = {"numpy": "2.0.2", "lightunetr-plain": "1.0", "notimported-xyz": "1"}
    after = {"numpy": "2.1.0", "lightunetr-plain": "1.0"}
    assert environment.changed_imported_packages(before, after) == ["numpy"]


def test_environment_report_runs_in_a_background_process():
    report = environment.EnvironmentReport(python=sys.executable)
    t0 = time.monotonic()
    report.start()
    assert time.monotonic() - t0 < 2.0 and not report.done, "the report blocked its caller"
    assert "Engine: checking" in report.text
    end = time.monotonic() + 120
    while report.poll():
        assert time.monotonic() < end
        time.sleep(0.05)
    engine = report.report["engine"]
    assert engine.get("torch") and "cuda_available" in engine, engine
    assert report.report["slicer"].startswith("slicer-core")
    assert "torch:" in report.text and "CUDA available" in report.text
    assert environment.missing_dependencies() == {}
