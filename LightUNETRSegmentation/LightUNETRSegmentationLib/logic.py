"""Segmentation logic (Qt-free): validate → export → ``lightunetr segment`` subprocess → import.

Console API (inside Slicer: ``logic = slicer.util.getModuleLogic("LightUNETRSegmentation")``)::

    job = logic.process(inputVolumeNode, outputSegmentationNode, model, device="auto", roiNode=None,
                        waitForCompletion=True)
    job.ok, job.message, job.segmentationNode, job.uncertaintyNode

    job = logic.processAsync(volume, None, "MyModel")      # returns at once
    job.progress, job.stage, job.eta_s; job.cancel(); job.wait()

    queue = logic.processQueue([volume1, volume2], model)  # one after another

Bad inputs (no volume, a 2-D volume, a model needing another channel count...) give a job whose
``status`` is ``"failed"`` and whose ``message`` says what to change; nothing raises and the scene is not
touched. A failed or cancelled run leaves the scene as it was; only a successful run creates or changes
the output segmentation (and the uncertainty volume).

Progress arrives when someone calls ``job.poll()`` (the widget does it from a QTimer; ``wait()`` does it
in a loop), so every callback and every scene change happens on the caller's thread.
"""

from __future__ import annotations

import logging
import os
import shutil

import slicer
from lightunetr_core.inference.options import InferenceOptions
from lightunetr_core.vocabulary import InputError

from lightunetr_core.jobs import runner as jobrunner

from LightUNETRSlicerLib import generated, modelinstall, segments, volumeio
from LightUNETRSlicerLib.models import ModelError, ModelInfo, ModelLibrary, read_model_info
from LightUNETRSlicerLib.parameters import device_problem

logger = logging.getLogger("LightUNETR")

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = (
    jobrunner.PENDING, jobrunner.RUNNING, jobrunner.COMPLETED, jobrunner.FAILED, jobrunner.CANCELLED)


def _as_list(volumes):
    if volumes is None:
        return []
    if isinstance(volumes, (list, tuple)):
        return list(volumes)
    return [volumes]


def validate_inputs(inputVolumeNodes, model: ModelInfo | None, device: str = "auto", roiNode=None) -> list[str]:
    """Messages (empty = fine) about inputs that cannot be segmented, each saying what to change."""
    msgs = []
    vols = [v for v in _as_list(inputVolumeNodes)]
    if not vols or any(v is None for v in vols):
        msgs.append("No input volume selected. Load a volume and select it as input.")
        return msgs
    for v in vols:
        if not v.IsA("vtkMRMLScalarVolumeNode") or v.IsA("vtkMRMLLabelMapVolumeNode"):
            kind = "a label map" if v.IsA("vtkMRMLLabelMapVolumeNode") else v.GetClassName()
            msgs.append(f"'{v.GetName()}' is {kind}, not a scalar (grayscale) volume. Select an image volume.")
            continue
        image = v.GetImageData()
        if image is None:
            msgs.append(f"'{v.GetName()}' has no image data. Load the volume again.")
            continue
        if image.GetNumberOfScalarComponents() != 1:
            msgs.append(f"'{v.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel (colour "
                        "or vector image); convert it to a scalar volume (Vector to Scalar Volume module).")
        dims = image.GetDimensions()
        if min(dims) < 2:
            msgs.append(f"'{v.GetName()}' is a 2-D image ({dims[0]}x{dims[1]}x{dims[2]} voxels); the model needs a "
                        "3-D volume. Load the whole series as a volume.")
        if v.GetParentTransformNode() is not None and not v.GetParentTransformNode().IsLinear():
            msgs.append(f"'{v.GetName()}' is under a non-linear transform; harden the transform first.")
    if model is None:
        msgs.append("No model selected. Add a model bundle (.lightunetr folder) and select it.")
    elif len(vols) != model.num_channels:
        msgs.append(
            f"Model '{model.name}' needs {model.num_channels} input channel(s) ({', '.join(model.input_channels)}) "
            f"but {len(vols)} volume(s) were given. Select one volume per channel, in that order, or choose a model "
            "trained for this input.")
    if len(vols) > 1 and not msgs:
        ref = vols[0]
        for v in vols[1:]:
            if v.GetImageData().GetDimensions() != ref.GetImageData().GetDimensions() or not _same_matrix(ref, v):
                msgs.append(f"'{v.GetName()}' is not on the same voxel grid as '{ref.GetName()}'; resample the "
                            "channels onto one grid (Resample Scalar/Vector/DWI Volume) first.")
    problem = device_problem(device)
    if problem:
        msgs.append(problem)
    if roiNode is not None and not msgs:
        try:
            if volumeio.roi_ijk_box(vols[0], roiNode) is None:
                msgs.append("The ROI does not overlap the input volume; move or resize the ROI.")
        except volumeio.VolumeIOError as exc:
            msgs.append(str(exc))
    return msgs


def _same_matrix(a, b, tol=1e-4) -> bool:
    import numpy as np

    return bool(np.allclose(volumeio.ijk_to_ras(a), volumeio.ijk_to_ras(b), atol=tol))


class SegmentationJob:
    """Handle of one segmentation run: ``status``, ``progress`` (0..1), ``stage``, ``eta_s``, ``message``,
    ``poll()``, ``wait(timeout)``, ``cancel()``, and the results ``segmentationNode``/``uncertaintyNode``."""

    def __init__(self, logic, inputVolumeNodes, outputSegmentationNode, model, device, roiNode, options):
        self.logic = logic
        self.inputVolumeNodes = _as_list(inputVolumeNodes)
        self.segmentationNode = outputSegmentationNode
        self.uncertaintyNode = None
        self.model: ModelInfo | None = None
        self.model_ref = model
        self.device = device or "auto"
        self.roiNode = roiNode
        self.options = dict(options)
        self.status = PENDING
        self.message = ""
        self.runner: jobrunner.JobRunner | None = None
        self.workdir: str | None = None
        self.segmentIds: list[str] = []
        self.review: dict | None = None  # the engine's review score with --uncertainty (inference/statistics.py)
        self.statistics: list = []  # voxels and volume (ml) per class
        self.on_progress = options.get("on_progress")
        self.on_finished = options.get("on_finished")
        self._finished_called = False

    # ------------------------------------------------------------------ state
    @property
    def ok(self) -> bool:
        return self.status == COMPLETED

    @property
    def done(self) -> bool:
        return self.status in jobrunner.FINAL_STATES

    @property
    def progress(self) -> float:
        if self.status == COMPLETED:
            return 1.0
        if self.runner is None or self.runner.fraction is None:
            return 0.0
        return min(0.99, self.runner.fraction)

    @property
    def stage(self) -> str:
        return self.runner.stage if self.runner else self.status

    @property
    def eta_s(self):
        return self.runner.eta_s if self.runner else None

    @property
    def log(self) -> list[str]:
        return self.runner.log_lines if self.runner else []

    def __repr__(self):
        return f"<SegmentationJob {self.status} {self.progress:.0%} {self.message!r}>"

    # ------------------------------------------------------------------ run
    def _fail(self, message: str, status: str = FAILED) -> None:
        self.status = status
        self.message = message
        if status == FAILED:
            logger.error("LightUNETR: %s", message)
        self._cleanup()
        self._notify_finished()

    def start(self) -> "SegmentationJob":
        try:
            self.model = self.logic.resolveModel(self.model_ref)
        except ModelError as exc:
            self.model = None
            self._fail(str(exc))
            return self
        msgs = validate_inputs(self.inputVolumeNodes, self.model, self.device, self.roiNode)
        box = self.options.get("ijkBox")
        if box is not None and not msgs and volumeio.clip_box(self.inputVolumeNodes[0], box) is None:
            msgs.append("The region does not overlap the input volume; choose another region.")
        if msgs:
            self._fail("\n".join(msgs))
            return self
        self.workdir = volumeio.make_temp_dir()
        inputs = []
        try:
            for n, vol in enumerate(self.inputVolumeNodes):
                node = vol
                cropped = None
                if self.options.get("ijkBox") is not None:
                    cropped = volumeio.crop_to_box(vol, self.options["ijkBox"], name="__LightUNETR_crop__")
                    node = cropped
                elif self.roiNode is not None:
                    cropped = volumeio.crop_to_roi(vol, self.roiNode, name="__LightUNETR_crop__")
                    node = cropped
                try:
                    inputs.append(volumeio.export_volume(node, os.path.join(self.workdir, f"input{n}.nrrd")))
                finally:
                    if cropped is not None:
                        segments.remove_node(cropped)
        except volumeio.VolumeIOError as exc:
            self._fail(str(exc))
            return self
        out = os.path.join(self.workdir, "result.nrrd")
        try:
            engine = InferenceOptions(
                overlap=float(self.options.get("overlap", 0.5)), return_uncertainty=bool(self.options.get("uncertainty")),
                # A class the model's card names as of separate parts (both kidneys) keeps them.
                largest_component="auto" if self.options.get("largestComponent") else False, tta_flips=bool(self.options.get("tta")),
                threads=self.options.get("threads") or None, device=self.device)
        except (InputError, TypeError, ValueError) as exc:
            self._fail(f"Invalid option: {exc}")
            return self
        cmd = jobrunner.core_command("segment", *inputs, "-m", self.model.path, "-o", out, *engine.to_cli_args(),
                                     python=self.logic.python)
        env = jobrunner.job_environment(self.logic.extraEnvironment, cpu_only=(self.device == "cpu"))
        self.runner = jobrunner.JobRunner(cmd, env=env, on_event=self._on_event, on_finished=self._on_runner_finished,
                                          grace_s=self.logic.cancelGraceSeconds, name="segment")
        self._expected_result = out
        try:
            self.runner.start()
        except OSError as exc:
            self._fail(f"Could not start the segmentation process ({exc}). Check the Python executable "
                       f"{cmd[0]} and the environment report.")
            return self
        self.status = RUNNING
        self.message = "Starting..."
        return self

    def _on_event(self, ev: dict) -> None:
        if ev.get("event") == "stage":
            self.message = ev.get("message") or ev.get("stage", "")
        elif ev.get("event") == "review":
            self.review = {k: v for k, v in ev.items() if k not in ("event", "schema", "time", "job", "case")}
        elif ev.get("event") == "statistics":
            self.statistics = list(ev.get("classes") or [])
        if self.on_progress:
            self.on_progress(self)

    def _on_runner_finished(self, runner: jobrunner.JobRunner) -> None:
        if runner.status == jobrunner.CANCELLED:
            self._fail("Segmentation cancelled; the scene was not changed.", CANCELLED)
            return
        if runner.status != jobrunner.COMPLETED:
            self._fail(f"Segmentation failed: {runner.error_message or 'unknown error'}")
            return
        try:
            self._import_results(runner)
        except (segments.SegmentImportError, volumeio.VolumeIOError) as exc:
            self._fail(f"Segmentation finished but its result could not be loaded: {exc}")
            return
        self.status = COMPLETED
        elapsed = runner.elapsed_s or 0.0
        self.message = f"Segmentation completed in {elapsed:.1f} s ({len(self.segmentIds)} segments)."
        logger.info("LightUNETR: %s", self.message)
        self._cleanup()
        self._notify_finished()

    def _import_results(self, runner) -> None:
        labels = runner.output_paths("labelmap") or runner.output_paths("segmentation") or [self._expected_result]
        path = labels[0]
        reference = self.inputVolumeNodes[0]
        scene = reference.GetScene()
        if scene is None:
            raise segments.SegmentImportError(f"the input volume '{reference.GetName()}' was removed from the scene "
                                              "while it was being segmented")
        if self.segmentationNode is not None and self.segmentationNode.GetScene() is None:
            raise segments.SegmentImportError("the output segmentation was removed from the scene during the run")
        created = None
        seg = self.segmentationNode
        if seg is None:
            created = seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                    scene.GenerateUniqueName(f"{reference.GetName()} segmentation"))
            generated.mark_generated(seg, self.model.name, self.options.get("kind", "segmentation"))
        try:
            self.segmentIds = segments.import_labelmap_file(path, seg, self.model.labels, referenceVolumeNode=reference)
            for sid in self.segmentIds:
                generated.mark_generated_segment(seg.GetSegmentation().GetSegment(sid), self.model.name)
            unc = runner.output_paths("uncertainty")
            if unc:
                node = volumeio.read_volume(unc[0], name=scene.GenerateUniqueName(f"{reference.GetName()} uncertainty"))
                generated.mark_generated(node, self.model.name, "uncertainty")
                segments.place_next_to(node, reference)
                self.uncertaintyNode = node
        except Exception:
            if created is not None:
                segments.remove_node(created)
            raise
        self.segmentationNode = seg

    def _notify_finished(self) -> None:
        if self.on_finished and not self._finished_called:
            self._finished_called = True
            self.on_finished(self)

    def _cleanup(self) -> None:
        """Remove the temporary copies of the patient's volume and the result files."""
        if self.workdir and not self.logic.keepTemporaryFiles:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ control
    def poll(self) -> bool:
        """Handle new output of the process; True while still running."""
        if self.runner is not None and not self.done:
            self.runner.poll()
        return not self.done

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> str:
        jobrunner.poll_until_done(self.poll, timeout, "segmentation", interval)
        return self.status

    def cancel(self) -> None:
        if self.done:
            return
        if self.runner is None:
            self._fail("Segmentation cancelled.", CANCELLED)
            return
        self.message = "Cancelling..."
        self.runner.cancel()

    def kill(self) -> None:
        """Kill the process tree now and remove the temporary files (module cleanup, application exit)."""
        if self.runner is not None:
            self.runner.kill(wait_s=5.0)
        if not self.done:
            self.status = CANCELLED
            self.message = "Segmentation stopped: Slicer is closing the module."
        self._cleanup()


class SegmentationQueue:
    """Several segmentations, one after the other (one process at a time)."""

    def __init__(self, logic, items: list[dict]):
        self.logic = logic
        self.items = items
        self.jobs: list[SegmentationJob] = []
        self.cancelled = False

    @property
    def current(self) -> SegmentationJob | None:
        return self.jobs[-1] if self.jobs else None

    @property
    def done(self) -> bool:
        return self.cancelled and (self.current is None or self.current.done) or (
            len(self.jobs) == len(self.items) and all(j.done for j in self.jobs))

    @property
    def progress(self) -> float:
        if not self.items:
            return 1.0
        finished = sum(1 for j in self.jobs if j.done)
        running = self.current.progress if self.current and not self.current.done else 0.0
        return min(1.0, (finished + running) / len(self.items))

    def _start_next(self) -> None:
        if self.cancelled or len(self.jobs) >= len(self.items):
            return
        item = dict(self.items[len(self.jobs)])
        self.jobs.append(self.logic.processAsync(**item))

    def start(self) -> "SegmentationQueue":
        self._start_next()
        self.poll()
        return self

    def poll(self) -> bool:
        while True:
            cur = self.current
            if cur is None:
                break
            cur.poll()
            if cur.done and not self.cancelled and len(self.jobs) < len(self.items):
                self._start_next()
                continue
            break
        return not self.done

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> list[SegmentationJob]:
        jobrunner.poll_until_done(self.poll, timeout, "the segmentation queue", interval)
        return self.jobs

    def cancel(self) -> None:
        self.cancelled = True
        if self.current is not None:
            self.current.cancel()

    def kill(self) -> None:
        """Stop at once: no further volume, the running job's process tree killed, its files removed."""
        self.cancelled = True
        for job in self.jobs:
            if not job.done:
                job.kill()


class SegmentationLogic:
    """Qt-free logic; the module's ``LightUNETRSegmentationLogic`` is a thin wrapper of the one instance
    :func:`shared_logic` returns (the Segment Editor effect and the Training module use the same one).

    Args:
        modelsFolder: folder of the model library (default: :func:`models.default_models_folder`).
        python: interpreter for the jobs (default: ``PythonSlicer`` in Slicer, ``sys.executable`` elsewhere).
    """

    def __init__(self, modelsFolder: str | None = None, python: str | None = None):
        self.library = ModelLibrary(modelsFolder)
        self.python = python
        self.extraEnvironment: dict = {}
        self.keepTemporaryFiles = False
        self.cancelGraceSeconds = 10.0
        self.activeJobs: list[SegmentationJob] = []
        self.installJobs: list = []  # downloads and conversions (modelinstall.ModelInstallJob)

    # models
    def models(self):
        return self.library.discover()

    def setModelsFolder(self, folder: str | None) -> None:
        self.library.set_folder(folder)

    def addModelFromFile(self, path: str, overwrite: bool = False) -> ModelInfo:
        """Add a bundle folder or a zipped bundle to the library (an authors' ``.pth``: :meth:`importCheckpoint`)."""
        return self.library.add(path, overwrite=overwrite)

    def downloadModel(self, name: str, **callbacks) -> "modelinstall.ModelInstallJob":
        """Download the catalog model ``name`` into the library in the background (returns the started job;
        ``on_progress(job)`` / ``on_finished(job)`` are called from ``job.poll()``)."""
        job = modelinstall.download_job(self.library, name, python=self.python, environment=self.extraEnvironment,
                                        **callbacks)
        return self._track(job.start())

    def importCheckpoint(self, path: str, preset: str, name: str | None = None, **callbacks) -> "modelinstall.ModelInstallJob":
        """Convert an authors' checkpoint (``.pth``) with ``preset`` into a bundle of the library, in the
        background. Raises :class:`ModelError` when the file is missing or the name is taken."""
        job = modelinstall.import_checkpoint_job(self.library, path, preset, name, python=self.python,
                                                 environment=self.extraEnvironment, **callbacks)
        return self._track(job.start())

    def _track(self, job):
        self.installJobs = [j for j in self.installJobs if not j.done]
        if not job.done:
            self.installJobs.append(job)
        return job

    def removeModel(self, model) -> None:
        self.library.remove(self.resolveModel(model).path)

    def resolveModel(self, model) -> ModelInfo:
        if model is None or model == "":
            raise ModelError("No model selected. Add a model bundle (.lightunetr folder) and select it.")
        if isinstance(model, ModelInfo):
            return model
        model = os.fspath(model)
        if os.path.exists(model) or os.sep in model or model.endswith(".lightunetr"):
            return read_model_info(model)  # a path: "Model not found: ..." when it does not exist
        return self.library.find(model)

    @staticmethod
    def inputVolumes(scene=None) -> list:
        """The volumes "Segment all loaded volumes" takes: the user's scalar volumes, not label maps, hidden
        nodes or volumes a LightUNETR module made (uncertainty maps)."""
        scene = scene or slicer.mrmlScene
        col = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        nodes = [col.GetItemAsObject(i) for i in range(col.GetNumberOfItems())]
        return [n for n in nodes if generated.is_input_volume(n)]

    # running
    def process(self, inputVolumeNode, outputSegmentationNode=None, model=None, device="auto", roiNode=None,
                waitForCompletion=True, timeout=None, **options) -> SegmentationJob:
        """Segment ``inputVolumeNode`` (or a list, one volume per model channel) with ``model`` (bundle
        path, model name in the models folder, or :class:`ModelInfo`). ``outputSegmentationNode`` None
        creates one. Options: ``uncertainty``, ``overlap``, ``largestComponent``, ``tta``, ``threads``,
        ``ijkBox`` (an inclusive IJK box ``(lo, hi)`` of the input to segment, instead of ``roiNode``),
        ``kind`` (the :mod:`.generated` kind of a created node), ``on_progress(job)``, ``on_finished(job)``. Returns the :class:`SegmentationJob` (finished when
        ``waitForCompletion``)."""
        job = SegmentationJob(self, inputVolumeNode, outputSegmentationNode, model, device, roiNode, options)
        job.start()
        if not job.done:
            self.activeJobs.append(job)
        if waitForCompletion:
            job.wait(timeout)
        self.activeJobs = [j for j in self.activeJobs if not j.done]
        return job

    def processAsync(self, inputVolumeNode, outputSegmentationNode=None, model=None, device="auto", roiNode=None,
                     **options) -> SegmentationJob:
        return self.process(inputVolumeNode, outputSegmentationNode, model, device, roiNode,
                            waitForCompletion=False, **options)

    def processQueue(self, inputVolumeNodes, model, device="auto", **options) -> SegmentationQueue:
        """Segment several volumes one after another, each into a new segmentation node."""
        items = [dict(inputVolumeNode=v, outputSegmentationNode=None, model=model, device=device, **options)
                 for v in inputVolumeNodes]
        return SegmentationQueue(self, items).start()

    def cancelAll(self) -> None:
        for job in list(self.activeJobs):
            job.cancel()

    def shutdown(self) -> None:
        """Kill every running job and remove its temporary files (module cleanup / application exit)."""
        for job in list(self.activeJobs) + list(self.installJobs):
            job.kill()
        self.activeJobs, self.installJobs = [], []


_SHARED: SegmentationLogic | None = None


def shared_logic(modelsFolder: str | None = None) -> SegmentationLogic:
    """The one :class:`SegmentationLogic` of this Slicer session: the Segmentation module's widget, the
    Segment Editor effect and the Training module all use it, so they share one model library (a model
    added in one place appears in all) and one list of running jobs. ``modelsFolder`` is used only when
    the instance is created."""
    global _SHARED
    if _SHARED is None:
        _SHARED = SegmentationLogic(modelsFolder=modelsFolder)
    return _SHARED
