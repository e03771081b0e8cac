"""Dependency checks, their installation in the background, and the environment report. Qt-free:
nothing is installed or imported at module import, nothing blocks the caller.

Installation (first Apply / Start training, after the user agreed):

1. torch, when missing, through the PyTorch extension (``PyTorchUtils.PyTorchUtilsLogic().installTorch``),
   which picks the CUDA build matching the NVIDIA driver. That call is the extension's own and blocks
   while it runs; the modules show a wait cursor and say so.
2. Everything else in a background ``python -m pip install -c CONSTRAINTS ...`` process
   (:class:`DependencyInstall`, a :class:`~lightunetr_core.jobs.runner.JobRunner`): Slicer stays responsive, pip's output
   is shown line by line and Cancel stops it. The constraints file pins the torch, numpy, SimpleITK and
   scipy already in Slicer's Python, so pip picks versions of the missing packages that work with them
   (monai 1.6 requires ``torch>=2.8``: unconstrained, pip would replace the PyTorch extension's CUDA torch
   with a CPU wheel while torch may be imported) instead of replacing them; when no such version exists
   pip fails with a message and nothing is changed. The same path runs on Slicer 5.10 (whose
   ``slicer.util.pip_install`` blocks the GUI and takes no constraints) and 5.12.

The report runs ``lightunetr info --json`` in a background process, so torch is never imported into
Slicer's process.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile

from lightunetr_core.jobs import runner as jobrunner

logger = logging.getLogger("LightUNETR")

# Packages the engine (lightunetr_core) needs in Slicer's Python; torch goes through the PyTorch extension.
REQUIREMENTS = {
    "torch": ">=2.4",
    "monai": ">=1.4",
    "SimpleITK": ">=2.3",
    "numpy": ">=1.24",
    "scipy": ">=1.10",
    "safetensors": ">=0.4",
    "matplotlib": ">=3.7",
    "pooch": ">=1.7",
}
IMPORT_NAMES = {"SimpleITK": "SimpleITK"}
#: Installed packages a dependency install must never change: the PyTorch extension's torch build and
#: the packages Slicer itself ships and has imported (numpy, scipy, SimpleITK).
PINNED_WHEN_INSTALLED = ("torch", "torchvision", "numpy", "scipy", "SimpleITK")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _satisfies(version: str, spec: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet

        return version in SpecifierSet(spec)
    except Exception:  # packaging missing or odd version: accept what is installed
        return True


def missing_dependencies() -> dict[str, str]:
    """{package: reason} for packages that are absent or too old (no import of them happens here)."""
    problems = {}
    for dist, spec in REQUIREMENTS.items():
        module = IMPORT_NAMES.get(dist, dist)
        version = _version(dist)
        if importlib.util.find_spec(module) is None or version is None:
            problems[dist] = f"not installed (needs {dist}{spec})"
        elif not _satisfies(version, spec):
            problems[dist] = f"version {version} installed, needs {dist}{spec}"
    return problems


def describe_missing(missing: dict[str, str]) -> str:
    return "LightUNETR needs these Python packages:\n" + "\n".join(f"  {k}: {v}" for k, v in missing.items())


def constraints_text(pinned=PINNED_WHEN_INSTALLED) -> str:
    """pip constraints that keep the installed versions of ``pinned`` packages (absent ones are free)."""
    lines = ["# Written by LightUNETR: keep the packages Slicer and the PyTorch extension installed."]
    for dist in pinned:
        version = _version(dist)
        if version:
            lines.append(f"{dist}=={version}")
    return "\n".join(lines) + "\n"


def installed_versions() -> dict[str, str]:
    """{normalised distribution name: version} of this interpreter's environment, read from disk."""
    importlib.invalidate_caches()
    out = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            out[name.lower().replace("_", "-")] = dist.version
    return out


def changed_imported_packages(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Distributions whose version changed (or that were removed) and whose module this process has
    already imported: the old code stays loaded until Slicer restarts."""
    imported = {m.split(".")[0].lower().replace("_", "-") for m in list(sys.modules)}
    return sorted(name for name, version in before.items() if after.get(name) != version and name in imported)


def pip_requirements(missing: dict[str, str]) -> list[str]:
    """Requirement strings for every missing package except torch (the PyTorch extension's job)."""
    return [f"{k}{REQUIREMENTS[k]}" for k in missing if k != "torch"]


class DependencyInstall:
    """``python -m pip install -c CONSTRAINTS REQUIREMENTS`` in a background process.

    ``start()`` returns at once; the owner calls ``poll()`` from a timer (Slicer) or loop (tests) and
    reads ``status`` (``running`` / ``completed`` / ``failed`` / ``cancelled``), ``log`` and ``message``;
    ``cancel()`` terminates pip's process tree. The constraints file lives in a private temporary folder
    removed when the install ends.

    Args:
        requirements: pip requirement strings (see :func:`pip_requirements`).
        python: interpreter whose environment is changed (default: PythonSlicer / ``sys.executable``).
        extra_args: further pip arguments (tests: ``--no-index --find-links DIR --target DIR``).
        constraints: constraints text (default: :func:`constraints_text` of this interpreter).
        extra_environment: variables for pip's process (tests: ``PIP_CONFIG_FILE``).
    """

    def __init__(self, requirements: list[str], python: str | None = None, extra_args: list[str] | None = None,
                 constraints: str | None = None, extra_environment: dict | None = None):
        self.requirements = list(requirements)
        self.extra_environment = dict(extra_environment or {})
        self.python = python or jobrunner.python_executable()
        self.extra_args = list(extra_args or [])
        self.constraints = constraints_text() if constraints is None else constraints
        self.folder: str | None = None
        self.runner: jobrunner.JobRunner | None = None
        self.status = jobrunner.PENDING
        self.message = ""
        self.restart_needed: list[str] = []  # imported packages pip changed: Slicer must restart
        self._before: dict[str, str] = {}

    @property
    def command(self) -> list[str]:
        return [self.python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                "--progress-bar", "off", "-c", os.path.join(self.folder or "", "constraints.txt"),
                *self.extra_args, *self.requirements]

    @property
    def log(self) -> list[str]:
        return self.runner.log_lines if self.runner else []

    @property
    def done(self) -> bool:
        return self.status in jobrunner.FINAL_STATES

    def start(self) -> "DependencyInstall":
        if not self.requirements:
            self.status, self.message = jobrunner.COMPLETED, "Nothing to install."
            return self
        self._before = installed_versions()
        self.folder = tempfile.mkdtemp(prefix="LightUNETR-pip-")
        with open(os.path.join(self.folder, "constraints.txt"), "w", encoding="utf-8") as f:
            f.write(self.constraints)
        env = jobrunner.job_environment({"PIP_NO_INPUT": "1", **self.extra_environment})
        self.runner = jobrunner.JobRunner(self.command, env=env, on_finished=self._on_finished, name="pip",
                                          protocol=False)
        try:
            self.runner.start()
        except OSError as exc:
            self._finish(jobrunner.FAILED, f"Could not start pip ({exc}).")
            return self
        self.status = jobrunner.RUNNING
        self.message = "Installing " + ", ".join(self.requirements) + "..."
        logger.info("LightUNETR: %s", " ".join(self.command))
        return self

    def _on_finished(self, runner: jobrunner.JobRunner) -> None:
        if runner.status == jobrunner.COMPLETED:
            self.restart_needed = changed_imported_packages(self._before, installed_versions())
            message = "Installed " + ", ".join(self.requirements) + "."
            if self.restart_needed:
                message += (" These packages were already loaded and changed: " + ", ".join(self.restart_needed)
                            + ". Restart Slicer before using LightUNETR.")
            self._finish(jobrunner.COMPLETED, message)
        elif runner.status == jobrunner.CANCELLED:
            self._finish(jobrunner.CANCELLED, "Installation cancelled; nothing more will be installed.")
        else:
            errors = [line for line in runner.log_lines if line.startswith("ERROR")] or runner.log_lines[-5:]
            self._finish(jobrunner.FAILED, "pip could not install " + ", ".join(self.requirements)
                         + " next to the installed packages:\n" + "\n".join(errors[-8:])
                         + "\nInstalled torch/numpy/SimpleITK/scipy were kept. Use the 'PyTorch Util' module to "
                         "install another torch, then try again.")

    def _finish(self, status: str, message: str) -> None:
        self.status, self.message = status, message
        if self.folder:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def poll(self) -> bool:
        if self.runner is not None and not self.done:
            self.runner.poll()
        return not self.done

    def wait(self, timeout: float | None = None) -> str:
        jobrunner.poll_until_done(self.poll, timeout, "pip")
        return self.status

    def cancel(self) -> None:
        if self.runner is not None and not self.done:
            self.runner.cancel()


def install_torch_with_pytorch_extension() -> tuple[bool, str]:
    """Install torch through the PyTorch extension (only inside Slicer). Blocks while it runs: it is the
    extension's own call (``PyTorchUtils.PyTorchUtilsLogic.installTorch``). Returns (ok, message)."""
    try:
        import PyTorchUtils
    except ImportError:
        return False, ("The PyTorch extension is not installed. Install 'PyTorch' from the Extensions Manager, "
                       "restart Slicer and try again.")
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if logic.torchInstalled():
        return True, "PyTorch is installed."
    try:
        torch = logic.installTorch(askConfirmation=False, torchVersionRequirement=REQUIREMENTS["torch"])
    except Exception as exc:  # the extension raises CalledProcessError / RuntimeError
        logger.exception("LightUNETR: PyTorch installation failed")
        return False, f"Installing PyTorch failed: {exc}. Use the 'PyTorch Util' module to install it."
    if torch is None:
        return False, "PyTorch was not installed. Use the 'PyTorch Util' module to install it."
    return True, "PyTorch installed."


def slicer_version() -> str:
    try:
        import slicer

        if hasattr(slicer, "app"):
            return str(slicer.app.applicationVersion)
    except ImportError:
        return "not running in Slicer"
    v = _version("slicer-core")
    return f"slicer-core {v}" if v else "unknown"


def static_report() -> dict:
    """What is known without starting a process: Slicer, Python, package versions, missing packages."""
    return {
        "slicer": slicer_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "python_executable": jobrunner.python_executable(),
        "packages": {k: _version(k) or "not installed" for k in REQUIREMENTS},
        "missing": missing_dependencies(),
    }


class EnvironmentReport:
    """The environment report, with torch/CUDA/GPU facts from ``lightunetr info --json`` run in a
    background process. ``start()`` returns at once; ``poll()`` until ``done``; then ``report`` / ``text``."""

    def __init__(self, python: str | None = None):
        self.python = python
        self.report = static_report()
        self.runner: jobrunner.JobRunner | None = None
        self.done = False

    def start(self) -> "EnvironmentReport":
        if "torch" in self.report["missing"]:
            self.report["engine"] = {"error": "torch is not installed"}
            self.done = True
            return self
        self.runner = jobrunner.JobRunner(jobrunner.core_command("info", "--json", python=self.python),
                                          env=jobrunner.job_environment(), on_finished=self._on_finished,
                                          name="info", protocol=False)
        try:
            self.runner.start()
        except OSError as exc:
            self.report["engine"] = {"error": str(exc)}
            self.done = True
        return self

    def _on_finished(self, runner: jobrunner.JobRunner) -> None:
        text = "\n".join(runner.stdout_lines)
        try:
            engine = json.loads(text[text.index("{"):]) if runner.status == jobrunner.COMPLETED else None
        except ValueError:
            engine = None
        if not isinstance(engine, dict):
            tail = [line for line in runner.log_lines if line.strip()][-1:] or [f"exit code {runner.returncode}"]
            engine = {"error": tail[0]}
        self.report["engine"] = engine
        self.done = True

    def poll(self) -> bool:
        if self.runner is not None and not self.done:
            self.runner.poll()
        return not self.done

    def cancel(self) -> None:
        if self.runner is not None and not self.done:
            self.runner.kill()
            self.report["engine"] = {"error": "cancelled"}
            self.done = True

    @property
    def text(self) -> str:
        return format_report(self.report)


def format_report(report: dict) -> str:
    lines = [f"Slicer: {report['slicer']}", f"Python: {report['python']} ({report['python_executable']})",
             f"Platform: {report['platform']}"]
    eng = report.get("engine", {})
    if not eng:
        lines.append("Engine: checking...")
    elif "error" in eng:
        lines.append(f"Engine: unavailable ({eng['error']})")
    else:
        lines.append(f"torch: {eng.get('torch')} (CUDA build {eng.get('torch_cuda_build')}), "
                     f"CUDA available: {eng.get('cuda_available')}, MPS: {eng.get('mps_available')}")
        for d in eng.get("cuda_devices", []):
            lines.append(f"GPU {d['index']}: {d['name']}, {d['memory_gib']} GiB, sm {d['capability']}")
        lines.append(f"MONAI: {eng.get('monai')}, lightunetr_core: {eng.get('lightunetr_core')}")
    for k, v in report.get("missing", {}).items():
        lines.append(f"Missing: {k} ({v})")
    return "\n".join(lines)
