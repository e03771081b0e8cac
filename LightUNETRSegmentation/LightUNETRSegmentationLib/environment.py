"""Dependency checks and the environment report. Nothing is installed or imported at module import;
:func:`ensure_dependencies` is called on first use (the first Apply), and never installs silently.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import platform
import subprocess
import sys

from . import jobrunner

logger = logging.getLogger("LightUNETR")

# Packages the engine (lightunetr_core) needs in Slicer's Python; torch goes through the PyTorch extension.
REQUIREMENTS = {
    "torch": ">=2.4",
    "monai": ">=1.4",
    "SimpleITK": ">=2.3",
    "numpy": ">=1.24",
    "scipy": ">=1.10",
    "safetensors": ">=0.4",
}
IMPORT_NAMES = {"SimpleITK": "SimpleITK"}


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


def ensure_dependencies(confirm=None) -> tuple[bool, str]:
    """Install what is missing, inside Slicer, after asking. Returns (ok, message).

    ``confirm(text) -> bool`` asks the user (the widget passes ``slicer.util.confirmOkCancelDisplay``).
    torch: the PyTorch extension's ``PyTorchUtils`` (right CUDA build); others:
    ``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or ``slicer.util.pip_install`` (5.10).
    """
    missing = missing_dependencies()
    if not missing:
        return True, "All dependencies are installed."
    text = "LightUNETR needs these Python packages:\n" + "\n".join(f"  {k}: {v}" for k, v in missing.items())
    try:
        import slicer
    except ImportError:
        return False, text + "\nInstall them with: pip install " + " ".join(f'"{k}{REQUIREMENTS[k]}"' for k in missing)
    if not hasattr(slicer, "app"):
        return False, text + "\n(Not running inside Slicer: install them with pip.)"
    if confirm is not None and not confirm(text + "\n\nInstall them now? This can take several minutes."):
        return False, text + "\nInstallation was declined."
    try:
        if "torch" in missing:
            try:
                import PyTorchUtils
            except ImportError:
                return False, ("The PyTorch extension is not installed. Install 'PyTorch' from the Extensions "
                               "Manager, restart Slicer and try again.")
            torch_logic = PyTorchUtils.PyTorchUtilsLogic()
            if not torch_logic.torchInstalled():
                torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=REQUIREMENTS["torch"])
        others = [f"{k}{REQUIREMENTS[k]}" for k in missing if k != "torch"]
        if others:
            packaging = getattr(slicer, "packaging", None)
            if packaging is not None and hasattr(packaging, "pip_ensure"):
                packaging.pip_ensure(others, requester="LightUNETR", skip_packages=["torch", "SimpleITK", "requests"],
                                     prompt_install=False)
            else:
                slicer.util.pip_install(others)
    except Exception as exc:  # report, do not crash the GUI
        logger.exception("LightUNETR: dependency installation failed")
        return False, f"Installing dependencies failed: {exc}. Use the 'PyTorch Util' module to (re)install torch."
    still = missing_dependencies()
    if still:
        return False, "Still missing after installation: " + ", ".join(still) + ". Restart Slicer and try again."
    return True, "Dependencies installed."


def slicer_version() -> str:
    try:
        import slicer

        if hasattr(slicer, "app"):
            return str(slicer.app.applicationVersion)
    except ImportError:
        return "not running in Slicer"
    v = _version("slicer-core")
    return f"slicer-core {v}" if v else "unknown"


def environment_report(timeout: float = 120.0) -> dict:
    """Slicer, Python, package versions, and (from a subprocess, so torch is not imported into Slicer)
    torch, CUDA and GPU information as reported by ``lightunetr info --json``."""
    report = {
        "slicer": slicer_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "python_executable": jobrunner.python_executable(),
        "packages": {k: _version(k) or "not installed" for k in REQUIREMENTS},
        "missing": missing_dependencies(),
    }
    if "torch" in report["missing"]:
        report["engine"] = {"error": "torch is not installed"}
        return report
    try:
        out = subprocess.run(
            jobrunner.core_command("info", "--json"), capture_output=True, text=True, timeout=timeout,
            env=jobrunner.job_environment(),
        )
        report["engine"] = json.loads(out.stdout) if out.returncode == 0 else {
            "error": (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]}
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        report["engine"] = {"error": str(exc)}
    return report


def format_report(report: dict) -> str:
    lines = [f"Slicer: {report['slicer']}", f"Python: {report['python']} ({report['python_executable']})",
             f"Platform: {report['platform']}"]
    eng = report.get("engine", {})
    if "error" in eng:
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
