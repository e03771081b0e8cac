"""pytest fixtures for Slicer-facing code: a REAL MRML scene from slicer-core.

slicer-core is bootstrapped ONCE per session (see slicer_bootstrap.py; bootstrapping twice registers
the segmentation converter rules twice) and the scene is cleared with ``scene.Clear(0)`` after every
test. The module folders (LightUNETRSegmentation, LightUNETRTraining) are put on
``sys.path`` the way Slicer puts its scripted-module folders on it.

Other test folders reuse this with ``pytest_plugins`` or by importing ``slicer_bootstrap``.
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
for sub in ("LightUNETRSegmentation", "LightUNETRTraining"):
    path = os.path.join(REPO, sub)
    if os.path.isdir(path) and path not in sys.path:
        sys.path.insert(0, path)

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _import_real_slicer():
    """Import slicer-core's ``slicer`` package. In CI (``CI`` set) a missing slicer-core is an error:
    the project's own set-up installs it, so a skip there would hide a broken install step."""
    try:
        import slicer as module
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("slicer-core is not installed (pip install 'slicer-core>=5.12,<5.13')", allow_module_level=True)
    return module


slicer = _import_real_slicer()
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)

for path in (HERE, os.path.dirname(HERE)):  # slicer_bootstrap; tests/loopback_server.py
    if path not in sys.path:
        sys.path.insert(0, path)
from slicer_bootstrap import bootstrap  # noqa: E402


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.slicer)


@pytest.fixture(scope="session")
def slicer_env():
    """The bootstrapped slicer-core environment (scene, app logic, module logics, VTK error log)."""
    return bootstrap()


@pytest.fixture
def scene(slicer_env):
    """``slicer.mrmlScene``, cleared after the test."""
    yield slicer_env.scene
    slicer_env.scene.Clear(0)


@pytest.fixture
def vtk_errors(slicer_env):
    """Callable returning the VTK errors logged since the test started."""
    start = len(slicer_env.read_vtk_errors())
    return lambda: slicer_env.read_vtk_errors()[start:]


from LightUNETRScenarios.segmentation import make_tiny_bundle  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def two_channel_bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("models2"), name="twochannel", in_channels=2)
