"""LightUNETRSegmentation: segment volumes with Light-UNETR model bundles.

Thin Slicer module: the widget only wires the .ui to :mod:`LightUNETRSegmentationLib.logic`, which is
Qt-free and tested with pytest against a real MRML scene (slicer-core). The self-test at the bottom
runs the same scenarios (:mod:`LightUNETRSegmentationLib.scenarios`) inside a real Slicer.
"""

import logging
import os

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:  # Slicer >= 5.2
    from slicer.parameterNodeWrapper import parameterNodeWrapper
except ImportError:  # pragma: no cover
    parameterNodeWrapper = None


class LightUNETRSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Light-UNETR Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy"]
        self.parent.contributors = ["LightUNETR developers"]
        self.parent.helpText = (
            "Segment 3-D volumes with Light-UNETR / Light-UNETR-L model bundles (.lightunetr folders). "
            "The network runs in a background process: Slicer stays responsive, progress and ETA are shown, "
            "and Cancel stops it. Optional: restrict to an ROI, write an uncertainty map, segment all loaded "
            "volumes one after another.<br>Console: <code>logic = slicer.util.getModuleLogic('LightUNETRSegmentation'); "
            "job = logic.process(volume, None, 'ModelName')</code>."
        )
        self.parent.acknowledgementText = (
            "Light-UNETR: Light-UNETR / CSE (CUHK-AIM-Group). Extension by the LightUNETR developers."
        )


if parameterNodeWrapper is not None:

    @parameterNodeWrapper
    class LightUNETRSegmentationParameterNode:
        inputVolume: slicer.vtkMRMLScalarVolumeNode
        outputSegmentation: slicer.vtkMRMLSegmentationNode
        roi: slicer.vtkMRMLMarkupsROINode
        model: str = ""
        device: str = "auto"
        uncertainty: bool = False
        overlap: float = 0.5
        largestComponent: bool = False

else:  # pragma: no cover
    LightUNETRSegmentationParameterNode = None


class LightUNETRSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._dependenciesChecked = False

    # ------------------------------------------------------------------ setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LightUNETRSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LightUNETRSegmentationLogic()

        self.ui.deviceComboBox.addItems(["auto", "cpu", "cuda", "mps"])
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.queueButton.connect("clicked(bool)", self.onQueueButton)
        self.ui.addModelButton.connect("clicked(bool)", self.onAddModel)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.environmentButton.connect("clicked(bool)", self.onEnvironmentReport)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.modelsFolderLineEdit.text = self.logic.library.folder
        self.ui.modelsFolderLineEdit.connect("editingFinished()", self.onModelsFolderChanged)

        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.refreshModels()
        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self):
        self.removeObservers()
        if self._timer:
            self._timer.stop()
        if self.logic:
            self.logic.shutdown()
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        if self._job is not None and not self._job.done:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self):
        if LightUNETRSegmentationParameterNode is None:
            return
        self.setParameterNode(LightUNETRSegmentationParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, node):
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = node
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    # ------------------------------------------------------------------ models
    def refreshModels(self):
        models, problems = self.logic.models()
        combo = self.ui.modelComboBox
        current = combo.currentData if combo.count else None
        combo.blockSignals(True)
        combo.clear()
        for m in models:
            combo.addItem(m.name, m.path)
            combo.setItemData(combo.count - 1, m.summary(), qt.Qt.ToolTipRole)
        if current:
            index = combo.findData(current)
            if index >= 0:
                combo.setCurrentIndex(index)
        combo.blockSignals(False)
        if problems:
            self.setStatus("Some model folders were skipped:\n" + "\n".join(problems))
        elif not models:
            self.setStatus(f"No models in {self.logic.library.folder}. Use 'Add model...' to install a .lightunetr bundle.")
        self.onModelChanged()

    def onModelsFolderChanged(self):
        self.logic.setModelsFolder(self.ui.modelsFolderLineEdit.text)
        self.refreshModels()

    def onModelChanged(self, index=None):
        path = self.ui.modelComboBox.currentData
        if self._parameterNode:
            self._parameterNode.model = path or ""
        info = ""
        if path:
            try:
                info = self.logic.resolveModel(path).summary()
            except Exception as exc:  # noqa: BLE001 - shown to the user
                info = str(exc)
        self.ui.modelInfoLabel.text = info
        self.updateButtons()

    def onAddModel(self):
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Select a model bundle (.lightunetr folder)")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("Could not add the model.", waitCursor=True):
            info = self.logic.addModelFromFile(folder)
            self.refreshModels()
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findData(info.path))
            self.setStatus(f"Added model {info.name}.")

    # ------------------------------------------------------------------ run
    def _checkDependencies(self):
        if self._dependenciesChecked:
            return True
        from LightUNETRSegmentationLib import environment

        ok, message = environment.ensure_dependencies(confirm=slicer.util.confirmOkCancelDisplay)
        if not ok:
            slicer.util.errorDisplay(message)
            return False
        self._dependenciesChecked = True
        return True

    def _options(self):
        p = self._parameterNode
        return dict(uncertainty=bool(p.uncertainty), overlap=float(p.overlap), largestComponent=bool(p.largestComponent))

    def onApplyButton(self):
        if not self._checkDependencies():
            return
        p = self._parameterNode
        self.ui.logTextEdit.clear()
        self._job = self.logic.processAsync(p.inputVolume, p.outputSegmentation, p.model or None, device=p.device,
                                            roiNode=p.roi, on_progress=lambda job: self.updateProgress(),
                                            **self._options())
        self._startMonitoring()

    def onQueueButton(self):
        if not self._checkDependencies():
            return
        volumes = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if not n.IsA("vtkMRMLLabelMapVolumeNode")]
        p = self._parameterNode
        self._job = self.logic.processQueue(volumes, p.model or None, device=p.device, **self._options())
        self._startMonitoring()

    def _startMonitoring(self):
        if self._job.done:
            self.onFinished()
            return
        self._timer.start()
        self.updateButtons()
        self.updateProgress()

    def onCancelButton(self):
        if self._job is not None:
            self._job.cancel()
            self.setStatus("Cancelling...")

    def onTimer(self):
        if self._job is None:
            self._timer.stop()
            return
        still = self._job.poll()
        self.updateProgress()
        if not still:
            self.onFinished()

    def onFinished(self):
        self._timer.stop()
        job = self._job
        jobs = getattr(job, "jobs", [job])
        messages = [j.message for j in jobs if j.message]
        self.setStatus("\n".join(messages))
        for j in jobs:
            if j.ok and j.segmentationNode is not None:
                if self._parameterNode and not self._parameterNode.outputSegmentation:
                    self._parameterNode.outputSegmentation = j.segmentationNode
                j.segmentationNode.CreateClosedSurfaceRepresentation()
        failed = [j for j in jobs if j.status == "failed"]
        if failed:
            slicer.util.errorDisplay(failed[0].message, detailedText="\n".join(failed[0].log[-40:]))
        self.updateButtons()

    def updateProgress(self):
        job = self._job
        if job is None:
            return
        self.ui.progressBar.value = int(round(100 * job.progress))
        current = getattr(job, "current", job)
        if current is None:
            return
        text = current.message or current.stage
        if current.eta_s:
            text += f" (about {current.eta_s:.0f} s left)"
        if hasattr(job, "jobs"):
            text = f"Volume {len(job.jobs)}/{len(job.items)}: " + text
        self.ui.statusLabel.text = text
        log = current.log
        shown = getattr(self, "_shownLogLines", 0) if getattr(self, "_shownJob", None) is current else 0
        for line in log[shown:]:
            self.ui.logTextEdit.appendPlainText(line)
        self._shownJob, self._shownLogLines = current, len(log)

    def setStatus(self, text):
        self.ui.statusLabel.text = text

    def updateButtons(self, caller=None, event=None):
        running = self._job is not None and not self._job.done
        p = self._parameterNode
        ready = bool(p and p.inputVolume and p.model)
        self.ui.applyButton.enabled = ready and not running
        self.ui.queueButton.enabled = bool(p and p.model) and not running
        self.ui.cancelButton.enabled = running
        self.ui.applyButton.toolTip = "Segment the input volume" if ready else "Select an input volume and a model"

    def onEnvironmentReport(self):
        from LightUNETRSegmentationLib import environment

        with slicer.util.WaitCursor():
            report = environment.format_report(environment.environment_report())
        self.ui.logTextEdit.setPlainText(report)


class LightUNETRSegmentationLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer wrapper of :class:`LightUNETRSegmentationLib.logic.SegmentationLogic` (all behaviour is
    there). ``process`` / ``processAsync`` / ``processQueue`` / ``models`` / ``addModelFromFile`` are
    forwarded."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from LightUNETRSegmentationLib.logic import SegmentationLogic

        settings = qt.QSettings()
        folder = settings.value("LightUNETR/ModelsFolder") or None
        self.core = SegmentationLogic(modelsFolder=folder)
        self.library = self.core.library

    def setModelsFolder(self, folder):
        from LightUNETRSegmentationLib.models import ModelLibrary

        self.core.library = self.library = ModelLibrary(folder or None)
        qt.QSettings().setValue("LightUNETR/ModelsFolder", folder)

    def __getattr__(self, name):  # forward the console API
        core = self.__dict__.get("core")
        if core is None:
            raise AttributeError(name)
        return getattr(core, name)

    def process(self, inputVolumeNode, outputSegmentationNode=None, model=None, device="auto", roiNode=None,
                waitForCompletion=True, **options):
        return self.core.process(inputVolumeNode, outputSegmentationNode, model, device, roiNode,
                                 waitForCompletion=waitForCompletion, **options)


class LightUNETRSegmentationTest(ScriptedLoadableModuleTest):
    """Runs the scenarios of LightUNETRSegmentationLib.scenarios (also run by pytest on slicer-core)."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        import tempfile

        self.tmpdir = tempfile.mkdtemp(prefix="LightUNETRTest-")

    def tearDown(self):
        import shutil

        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def runTest(self):
        self.setUp()
        self.test_roundtrip_geometries()
        self.setUp()
        self.test_with_model()
        self.setUp()
        self.test_widget()
        self.tearDown()

    def test_widget(self):
        """The GUI path: Apply runs in the background, the timer drives progress, the result appears."""
        import numpy as np

        from LightUNETRSegmentationLib import environment, scenarios

        slicer.util.selectModule("LightUNETRSegmentation")
        widget = slicer.modules.lightunetrsegmentation.widgetRepresentation().self()
        volume = scenarios.add_volume("widget-input", scenarios.test_pattern((30, 34, 38)).astype(np.float32), "oblique")
        widget._parameterNode.inputVolume = volume
        if environment.missing_dependencies():
            self.assertFalse(widget.ui.cancelButton.enabled)
            self.delayDisplay("torch/MONAI not installed: widget test limited to the idle state")
            return
        scenarios.make_tiny_bundle(self.tmpdir, name="widget")
        oldFolder = widget.logic.library.folder
        try:
            widget.logic.setModelsFolder(self.tmpdir)
            widget.refreshModels()
            self.assertEqual(widget.ui.modelComboBox.currentText, "widget")
            self.assertTrue(widget.ui.applyButton.enabled)
            widget._dependenciesChecked = True
            widget._parameterNode.device = "cpu"
            widget.ui.applyButton.click()
            self.assertTrue(widget.ui.cancelButton.enabled)
            import time

            deadline = time.time() + 600
            while widget._job is not None and not widget._job.done and time.time() < deadline:
                slicer.app.processEvents()
                time.sleep(0.05)
            slicer.app.processEvents()
            self.assertTrue(widget._job.ok, widget._job.message)
            seg = widget._job.segmentationNode
            self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 3)
            self.assertEqual(widget.ui.progressBar.value, 100)
            self.assertFalse(widget.ui.cancelButton.enabled)
        finally:
            widget.logic.setModelsFolder(oldFolder)
            widget.refreshModels()
        self.delayDisplay("Widget test passed")

    def test_roundtrip_geometries(self):
        from LightUNETRSegmentationLib import scenarios

        for geometry in ("anisotropic", "oblique", "left-handed", "left-handed-oblique"):
            self.delayDisplay(f"Label import, {geometry}")
            scenarios.roundtrip_labels_scenario(self.tmpdir, geometry)
            slicer.mrmlScene.Clear()
        self.delayDisplay("Label import test passed")

    def test_with_model(self):
        from LightUNETRSegmentationLib import environment, scenarios
        from LightUNETRSegmentationLib.logic import SegmentationLogic

        if environment.missing_dependencies():
            self.delayDisplay("torch/MONAI not installed: skipping the end-to-end test "
                              f"({environment.missing_dependencies()})")
            return
        bundle = scenarios.make_tiny_bundle(self.tmpdir)
        two = scenarios.make_tiny_bundle(self.tmpdir, name="two", in_channels=2)
        logic = SegmentationLogic(modelsFolder=self.tmpdir)
        self.delayDisplay("Bad inputs give messages")
        scenarios.bad_inputs_scenario(logic, bundle, two)
        slicer.mrmlScene.Clear()
        for geometry in ("oblique", "left-handed-oblique"):
            self.delayDisplay(f"Segmentation equals the CLI on the same file, {geometry}")
            scenarios.end_to_end_scenario(logic, self.tmpdir, bundle, geometry)
            slicer.mrmlScene.Clear()
        self.delayDisplay("End-to-end test passed")
