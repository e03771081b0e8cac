"""Start slicer-core the way Slicer's application does, once per process.

Reusable by every Slicer-facing test package (LightUNETRSegmentation, LightUNETRTraining):
``from slicer_bootstrap import bootstrap; env = bootstrap()``. The conftest in this folder calls it
once per session and publishes ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()``.

slicer-core keeps only raw pointers to the application and module logics; the module-level
``_STATE`` keeps Python references to them for the whole process (dropping them segfaults).
"""

from __future__ import annotations

import os
import tempfile
import types
from dataclasses import dataclass, field

_STATE: "SlicerEnvironment | None" = None


@dataclass
class SlicerEnvironment:
    scene: object
    app_logic: object
    logics: dict = field(default_factory=dict)
    vtk_log_path: str = ""
    keep: list = field(default_factory=list)  # objects that must outlive the process

    def read_vtk_errors(self) -> str:
        try:
            with open(self.vtk_log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class _ModuleEntry:
    """Stands in for ``slicer.modules.<name>``: only ``logic()`` is needed by Qt-free code."""

    def __init__(self, logic):
        self._logic = logic

    def logic(self):
        return self._logic


def bootstrap() -> SlicerEnvironment:
    """Create the scene, application logic, IO logics and module logics; idempotent."""
    global _STATE
    if _STATE is not None:
        return _STATE

    import slicer
    import vtk

    # VTK errors go to a file the tests can read (and fail on), not to the terminal.
    log_fd, log_path = tempfile.mkstemp(prefix="slicer-core-vtk-", suffix=".log")
    os.close(log_fd)
    try:
        vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
    except AttributeError:
        pass
    output_window = vtk.vtkFileOutputWindow()
    output_window.SetFileName(log_path)
    output_window.SetFlush(True)
    vtk.vtkOutputWindow.SetInstance(output_window)

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)

    rio = slicer.vtkMRMLRemoteIOLogic()
    dio = slicer.vtkDataIOManagerLogic()
    dio.SetMRMLApplicationLogic(app)
    dio.SetAndObserveDataIOManager(rio.GetDataIOManager())
    app.SetMRMLSceneDataIO(scene, rio, dio)

    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)
    slice_logics, view_logics = vtk.vtkCollection(), vtk.vtkCollection()
    app.SetSliceLogics(slice_logics)
    app.SetViewLogics(view_logics)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)

    logics = {}
    for name, cls in (
        ("colors", slicer.vtkSlicerColorLogic),
        ("subjecthierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ("terminologies", slicer.vtkSlicerTerminologiesModuleLogic),
        ("volumes", slicer.vtkSlicerVolumesLogic),
        ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("cropvolume", slicer.vtkSlicerCropVolumeLogic),
        ("markups", slicer.vtkSlicerMarkupsLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        module_name = {
            "colors": "Colors",
            "subjecthierarchy": "SubjectHierarchy",
            "terminologies": "Terminologies",
            "volumes": "Volumes",
            "segmentations": "Segmentations",
            "cropvolume": "CropVolume",
            "markups": "Markups",
        }[name]
        app.SetModuleLogic(module_name, logic)
        if name == "colors":
            app.SetColorLogic(logic)
        logics[name] = logic

    slicer.mrmlScene = scene
    modules = getattr(slicer, "modules", None)
    if modules is None or not isinstance(modules, types.SimpleNamespace):
        modules = types.SimpleNamespace()
        slicer.modules = modules
    for name, logic in logics.items():
        setattr(modules, name, _ModuleEntry(logic))

    _STATE = SlicerEnvironment(
        scene=scene,
        app_logic=app,
        logics=logics,
        vtk_log_path=log_path,
        keep=[rio, dio, crosshair, slice_logics, view_logics, output_window],
    )
    return _STATE
