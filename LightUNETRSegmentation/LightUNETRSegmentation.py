"""LightUNETRSegmentation: segment volumes with Light-UNETR model bundles, and the "Light-UNETR" Segment
Editor effect.

Thin Slicer module: the widget wires the .ui to the Qt-free :mod:`LightUNETRSegmentationLib.logic`
(tested with pytest against a real MRML scene from slicer-core). Every Slicer/Qt/CTK call here was looked
up in Slicer's source at v5.10.0 and v5.12.x (docs/slicer.md, "API audit"); Testing/pytest/test_slicer_contracts.py
checks the rules that can be checked without Slicer (which widget and annotation pairs bind, which
methods exist). The self-test at the bottom runs in a real Slicer.
"""

import os
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LightUNETRSlicerLib import DOCUMENTATION_URL, parameters
from LightUNETRSegmentationLib.logic import shared_logic


class LightUNETRSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Light-UNETR Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy"]
        self.parent.contributors = ["LightUNETR developers"]
        self.parent.helpText = (
            "Segment 3-D volumes with Light-UNETR / Light-UNETR-L model bundles (.lightunetr folders). "
            "The network runs in a background process: Slicer stays responsive, progress and the time left are "
            "shown, and Cancel stops it. Optional: restrict to an ROI, write an uncertainty map, segment all loaded "
            "volumes one after another. The <b>Light-UNETR</b> effect of the Segment Editor uses the same models."
            f'<p>Documentation: <a href="{DOCUMENTATION_URL}">{DOCUMENTATION_URL}</a></p>'
        )
        self.parent.acknowledgementText = (
            "Light-UNETR and CSE: Liu et al., Harnessing Lightweight Transformer with Contextual Synergic "
            "Enhancement for Efficient 3D Medical Image Segmentation. Extension by the LightUNETR developers."
        )
        # Register the Segment Editor effect once the Segmentations module is up (as Slicer's
        # ScriptedSegmentEditorEffect template does, Utilities/Templates/Modules/ScriptedSegmentEditorEffect).
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)
        # At exit every job of the session is killed and its temporary copies of patient data removed.
        slicer.app.connect("aboutToQuit()", self.onAboutToQuit)

    def registerEditorEffect(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as qSlicerSegmentationsEditorEffects

        instance = qSlicerSegmentationsEditorEffects.qSlicerSegmentEditorScriptedEffect(None)
        # setPythonSource loads the file as a module named after its folder
        # (qSlicerSegmentEditorScriptedEffect.cxx): a folder of its own, never imported as a package.
        effectFilename = os.path.join(os.path.dirname(__file__), "SegmentEditorLightUNETRLib", "SegmentEditorEffect.py")
        instance.setPythonSource(effectFilename.replace("\\", "/"))
        instance.self().register()

    def onAboutToQuit(self):
        shared_logic().shutdown()


@parameterNodeWrapper
class LightUNETRSegmentationParameterNode:
    """The module's scene parameters (saved with the scene). ``model`` is the bundle path; the model combo
    box is filled from the model library, so it is kept in step with this field by the widget."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    roi: slicer.vtkMRMLMarkupsROINode
    model: str = ""
    device: Annotated[str, Choice(list(parameters.DEVICES))] = parameters.DEFAULT_DEVICE
    uncertainty: bool = False
    overlap: Annotated[float, WithinRange(*parameters.OVERLAP_RANGE)] = parameters.DEFAULT_OVERLAP
    largestComponent: bool = False


def _same_path(a, b) -> bool:
    return bool(a) and bool(b) and os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


class LightUNETRSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._binding = None  # parameters.GuiBinding of the parameter node and self.ui
        self._job = None
        self._report = None
        self._timer = None
        self._installer = None
        self._installs = []  # modeldialogs.InstallProgress of the downloads / conversions this widget shows
        self._shownJob, self._shownLogLines = None, 0

    # ------------------------------------------------------------------ setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LightUNETRSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._binding = parameters.GuiBinding(self.ui)
        self.logic = LightUNETRSegmentationLogic()

        from LightUNETRSlicerLib.dependencydialog import DependencyInstaller

        self._installer = DependencyInstaller(slicer.util.mainWindow())
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.queueButton.connect("clicked(bool)", self.onQueueButton)
        self.ui.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        self.ui.addModelButton.connect("clicked(bool)", self.onAddModel)
        self.ui.removeModelButton.connect("clicked(bool)", self.onRemoveModel)
        self.ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        self.ui.refreshModelsButton.connect("clicked(bool)", lambda checked: self.refreshModels())
        self.ui.environmentButton.connect("clicked(bool)", self.onEnvironmentReport)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelComboChanged)
        self.ui.modelsFolderPathLineEdit.currentPath = self.logic.library.folder
        # ctkPathLineEdit emits currentPathChanged for every keystroke that forms a valid path: the folder
        # is taken once the user paused typing (each change rescans the library in every model list).
        self._folderTimer = qt.QTimer()
        self._folderTimer.setSingleShot(True)
        self._folderTimer.setInterval(800)
        self._folderTimer.connect("timeout()", self.onModelsFolderChanged)
        self.ui.modelsFolderPathLineEdit.connect("currentPathChanged(QString)", lambda path: self._folderTimer.start())

        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self.onTimer)

        self.logic.library.add_listener(self.refreshModels)  # Training and the effect add models too
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.initializeParameterNode()

    @property
    def _parameterNode(self):
        return self._binding.node if self._binding else None

    def cleanup(self):
        self.setParameterNode(None)
        self.removeObservers()
        for timer in (self._timer, getattr(self, "_folderTimer", None)):
            if timer:
                timer.stop()
        if self._installer:
            self._installer.cleanup()
        for install in self._installs:  # nobody would poll their jobs any more: stop them (nothing is kept)
            install.close(cancelJob=True)
        self._installs = []
        if self.logic:
            self.logic.library.remove_listener(self.refreshModels)
        # Only this widget's own job: the effect's previews and Training's runs belong to them (a developer
        # "Reload" cleans up this widget alone); application exit stops everything (onAboutToQuit).
        if self._job is not None and not self._job.done:
            self._job.kill()

    def enter(self):
        self.initializeParameterNode()

    # exit(): the GUI stays bound to the node (parameters.GuiBinding says why), and a job that finishes
    # meanwhile still records its output in the node.

    def onSceneStartClose(self, caller, event):
        if self._job is not None and not self._job.done:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event):
        # A loaded scene's values were copied into the module's singleton node without the checks of
        # initializeParameterNode (a device this machine lacks, say): re-check them, as SegmentEditor.py
        # re-selects its node after an import.
        if self._parameterNode is not None:
            self.initializeParameterNode()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self):
        raw = self.logic.getParameterNode()
        # The same node keeps its wrapper, which stays connected (parameters.GuiBinding).
        node = self._parameterNode if self._parameterNode and self._parameterNode.parameterNode is raw else \
            LightUNETRSegmentationParameterNode(raw)
        # A scene saved on another machine can hold a device this one does not offer (mps); the combo-box
        # connector raises on it, which would leave every widget unbound.
        node.device = parameters.valid_choice(node.device, parameters.DEVICES, parameters.DEFAULT_DEVICE)
        node.overlap = parameters.clamp(node.overlap, *parameters.OVERLAP_RANGE)
        if not node.inputVolume:
            volumes = self.logic.inputVolumes()
            if volumes:
                node.inputVolume = volumes[0]
        self.setParameterNode(node)

    def setParameterNode(self, node):
        if self._binding is None:  # setup() did not get that far
            return
        old = self._binding.node
        if self._binding.bind(node) and old is not None and self.hasObserver(old, vtk.vtkCommand.ModifiedEvent,
                                                                            self.onParameterNodeModified):
            self.removeObserver(old, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        if node is not None and not self.hasObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified):
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.refreshModels()

    def onParameterNodeModified(self, caller=None, event=None):
        # The node is the single source of truth: show the model it holds (a script may have set it).
        combo = self.ui.modelComboBox
        if self._parameterNode and (combo.currentData or "") != self._parameterNode.model:
            index = combo.findData(self._parameterNode.model)
            if index >= 0:
                combo.blockSignals(True)
                combo.setCurrentIndex(index)
                combo.blockSignals(False)
                self._showModelInfo()
            else:
                self.refreshModels()
                return
        self.updateButtons()

    # ------------------------------------------------------------------ models
    def refreshModels(self):
        models, problems = self.logic.models()
        current = self._parameterNode.model if self._parameterNode else (self.ui.modelComboBox.currentData or "")
        selected, message = parameters.choose_model(current, models)
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        for m in models:
            combo.addItem(m.name, m.path)
            combo.setItemData(combo.count - 1, m.summary(), qt.Qt.ToolTipRole)
        combo.setCurrentIndex(combo.findData(selected) if selected else -1)
        combo.blockSignals(False)
        folderEdit = self.ui.modelsFolderPathLineEdit
        if not _same_path(folderEdit.currentPath, self.logic.library.folder):  # changed elsewhere (a script)
            folderEdit.blockSignals(True)
            folderEdit.currentPath = self.logic.library.folder
            folderEdit.blockSignals(False)
        if self._parameterNode and self._parameterNode.model != selected:
            self._parameterNode.model = selected
        if problems:
            self.setStatus("Some model folders were skipped:\n" + "\n".join(problems))
        elif message:
            self.setStatus(message)
        elif not models:
            self.setStatus(f"No models yet in {self.logic.library.folder}. Click 'Download...' for a model released by "
                           "the Light-UNETR authors, or 'Add model...' for a bundle or an authors' .pth checkpoint.")
        self._showModelInfo()
        self.updateButtons()

    def onModelComboChanged(self, index):
        if self._parameterNode:
            self._parameterNode.model = self.ui.modelComboBox.currentData or ""
        self._showModelInfo()
        self.updateButtons()

    def _showModelInfo(self):
        path = self.ui.modelComboBox.currentData
        info = ""
        if path:
            try:
                info = self.logic.resolveModel(path).summary()
            except Exception as exc:  # noqa: BLE001 - a damaged bundle is shown to the user
                info = str(exc)
        self.ui.modelInfoLabel.text = info

    def onModelsFolderChanged(self):
        path = self.ui.modelsFolderPathLineEdit.currentPath
        if path and os.path.isdir(path) and not _same_path(path, self.logic.library.folder):
            self.logic.setModelsFolder(path)

    def onOpenModelsFolder(self):
        folder = self.logic.library.folder
        os.makedirs(folder, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(folder))

    def onDownloadModel(self):
        from LightUNETRSegmentationLib import modeldialogs

        if not self._installer.ensure(onReady=self.onDownloadModel):  # the download job runs the engine
            return
        with slicer.util.tryWithErrorDisplay("Could not read the model catalog.", waitCursor=False):
            name = modeldialogs.chooseCatalogModel(slicer.util.mainWindow(), self.logic.library)
            if name:
                job = self.logic.downloadModel(name)
                self._track(modeldialogs.InstallProgress(
                    job, slicer.util.mainWindow(), onDone=lambda j: self._onModelInstalled(j.model if j.ok else None, j.message)))

    def onAddModel(self):
        from LightUNETRSegmentationLib import modeldialogs

        self._track(modeldialogs.addModelInteractively(
            slicer.util.mainWindow(), self.logic, self._onModelInstalled,
            ensureEngine=lambda: self._installer.ensure(onReady=self.onAddModel)))

    def _track(self, install):
        self._installs = [i for i in self._installs if not i.finished] + ([install] if install is not None else [])

    def _onModelInstalled(self, info, message=""):
        """Select a model just added (the library already told every model list); say what happened."""
        if info is not None and self._parameterNode:
            self._parameterNode.model = info.path
        self.setStatus(message)

    def onRemoveModel(self):
        path = self.ui.modelComboBox.currentData
        if not path:
            return
        name = self.ui.modelComboBox.currentText
        if not slicer.util.confirmOkCancelDisplay(f"Delete the model '{name}' from {self.logic.library.folder}?",
                                                  windowTitle="Remove model"):
            return
        with slicer.util.tryWithErrorDisplay("Could not remove the model.", waitCursor=True):
            if self._parameterNode:
                self._parameterNode.model = ""  # then the list falls back to the first model, silently
            self.logic.removeModel(path)
            self.setStatus(f"Removed model {name}.")

    # ------------------------------------------------------------------ run
    def _options(self):
        p = self._parameterNode
        return dict(uncertainty=bool(p.uncertainty), overlap=float(p.overlap), largestComponent=bool(p.largestComponent))

    def onApplyButton(self):
        if not self._installer.ensure(onReady=self.onApplyButton):
            return
        p = self._parameterNode
        self.ui.logTextEdit.clear()
        self._job = self.logic.processAsync(p.inputVolume, p.outputSegmentation, p.model or None, device=p.device,
                                            roiNode=p.roi, **self._options())
        self._startMonitoring()

    def onQueueButton(self):
        if not self._installer.ensure(onReady=self.onQueueButton):
            return
        p = self._parameterNode
        volumes = self.logic.inputVolumes()
        if not volumes:
            self.setStatus("No volumes to segment: load one first.")
            return
        self.ui.logTextEdit.clear()
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
        if self._job is not None and not self._job.done:
            self._job.cancel()
            self.setStatus("Cancelling...")

    def onTimer(self):
        if self._report is not None:
            self._report.poll()
            if self._report.done:
                self.ui.logTextEdit.setPlainText(self._report.text)
                self._report = None
        if self._job is not None and not self._job.done:
            still = self._job.poll()
            self.updateProgress()
            if not still:
                self.onFinished()
        if self._report is None and (self._job is None or self._job.done):
            self._timer.stop()

    def onFinished(self):
        job = self._job
        jobs = getattr(job, "jobs", [job])
        self.updateProgress()
        self.setStatus("\n".join(j.message for j in jobs if j.message))
        for j in jobs:
            if j.ok and j.segmentationNode is not None:
                if self._parameterNode and not self._parameterNode.outputSegmentation and j is job:
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
        shown = self._shownLogLines if self._shownJob is current else 0
        for line in log[shown:]:
            self.ui.logTextEdit.appendPlainText(line)
        self._shownJob, self._shownLogLines = current, len(log)

    def setStatus(self, text):
        self.ui.statusLabel.text = text

    def updateButtons(self, caller=None, event=None):
        running = self._job is not None and not self._job.done
        p = self._parameterNode
        hasModel = bool(p and p.model)
        ready = bool(hasModel and p.inputVolume)
        self.ui.applyButton.enabled = ready and not running
        self.ui.queueButton.enabled = hasModel and not running
        self.ui.cancelButton.enabled = running
        self.ui.removeModelButton.enabled = hasModel and not running
        self.ui.applyButton.toolTip = "Segment the input volume" if ready else "Select an input volume and a model"

    def onEnvironmentReport(self):
        from LightUNETRSlicerLib import environment

        self._report = environment.EnvironmentReport().start()
        self.ui.logTextEdit.setPlainText(self._report.text)
        self._timer.start()


class LightUNETRSegmentationLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer wrapper of the session's one :class:`LightUNETRSegmentationLib.logic.SegmentationLogic`
    (:func:`~LightUNETRSegmentationLib.logic.shared_logic`, also used by the Segment Editor effect and the
    Training module). Console API: ``process`` / ``processAsync`` / ``processQueue`` / ``models`` /
    ``addModelFromFile`` / ``downloadModel`` / ``importCheckpoint`` / ``removeModel`` / ``inputVolumes``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = shared_logic(modelsFolder=qt.QSettings().value(parameters.MODELS_FOLDER_SETTING) or None)

    @property
    def library(self):
        return self.core.library

    def setModelsFolder(self, folder):
        self.core.setModelsFolder(folder or None)
        qt.QSettings().setValue(parameters.MODELS_FOLDER_SETTING, folder or "")

    def __getattr__(self, name):  # forward the console API
        core = self.__dict__.get("core")
        if core is None:
            raise AttributeError(name)
        return getattr(core, name)


class LightUNETRSegmentationTest(ScriptedLoadableModuleTest):
    """Runs in a real Slicer: the first-launch state of the widget, the shared scenarios of
    LightUNETRSegmentationLib (also run by pytest on slicer-core) and, when torch and MONAI are installed
    in Slicer's Python, a real segmentation through the widget and through the Segment Editor effect."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        # Slicer's "Reload and Test" calls runTest() alone (ScriptedLoadableModule.py: testCase.runTest()),
        # ctest through unittest (setUp, runTest, tearDown): each test gets its own scene and temporary
        # folder here, removed whatever happens.
        import shutil
        import tempfile

        for test in (self.test_first_launch, self.test_roundtrip_geometries, self.test_effect_registered,
                     self.test_effect_apply_through_editor_logic, self.test_with_model, self.test_add_zipped_model,
                     self.test_widget,
                     self.test_effect_gui):
            self.setUp()
            self.tmpdir = tempfile.mkdtemp(prefix="LightUNETRTest-")
            try:
                test()
            finally:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _widget(self):
        slicer.util.selectModule("LightUNETRSegmentation")
        return slicer.modules.lightunetrsegmentation.widgetRepresentation().self()

    def test_first_launch(self):
        """The parameter node is bound to the GUI (connectGui did not raise) with the .ui's ranges."""
        widget = self._widget()
        self.assertTrue(widget._binding.connected, "the parameter node is not connected to the GUI")
        self.assertEqual([widget.ui.deviceComboBox.itemText(i) for i in range(widget.ui.deviceComboBox.count)],
                         list(parameters.DEVICES))
        self.assertEqual((widget.ui.overlapSpinBox.minimum, widget.ui.overlapSpinBox.maximum), parameters.OVERLAP_RANGE)
        widget.ui.overlapSpinBox.value = 0.25
        self.assertAlmostEqual(widget._parameterNode.overlap, 0.25)
        self.assertFalse(widget.ui.cancelButton.enabled)
        self.assertEqual(widget.ui.applyButton.enabled, bool(widget._parameterNode.model and widget._parameterNode.inputVolume))
        self.assertTrue(widget.ui.downloadModelButton.enabled, "a first-time user must be able to download a model")
        if not widget.logic.models()[0]:
            self.assertIn("Download...", widget.ui.statusLabel.text)
        # A choice other than the first survives leaving and re-entering the module (a binding left live by a
        # falsy connectGui tag 0 wrote the first choice back into the node).
        widget.ui.deviceComboBox.currentIndex = widget.ui.deviceComboBox.findText("cpu")
        slicer.util.selectModule("Data")
        slicer.util.selectModule("LightUNETRSegmentation")
        self.assertEqual((widget.ui.deviceComboBox.currentText, widget._parameterNode.device), ("cpu", "cpu"))
        self.assertAlmostEqual(widget.ui.overlapSpinBox.value, 0.25)
        self.delayDisplay("First launch: GUI bound to the parameter node")

    def test_roundtrip_geometries(self):
        from LightUNETRScenarios import segmentation as scenarios

        for geometry in ("anisotropic", "oblique", "left-handed", "left-handed-oblique"):
            self.delayDisplay(f"Label import, {geometry}")
            scenarios.roundtrip_labels_scenario(self.tmpdir, geometry)
            slicer.mrmlScene.Clear(0)

    def _editorWithEffect(self, shape=(20, 24, 28)):
        """A segment editor widget with a segmentation and a source volume, the Light-UNETR effect active.
        Both nodes are set before the effect is activated: qMRMLSegmentEditorWidget dereferences the
        segmentation (as Slicer's effect template test does it)."""
        import numpy as np

        from LightUNETRScenarios import segmentation as scenarios

        volume = scenarios.add_volume("effect-source", scenarios.test_pattern(shape).astype(np.float32), "oblique")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        w = slicer.qMRMLSegmentEditorWidget()
        w.setMRMLScene(slicer.mrmlScene)
        w.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
        w.setSegmentationNode(segmentation)
        w.setSourceVolumeNode(volume)
        w.setActiveEffectByName("Light-UNETR")
        return w, volume, segmentation

    def test_effect_registered(self):
        w, _, _ = self._editorWithEffect()
        self.assertIsNotNone(w.activeEffect(), "the Light-UNETR effect is not registered")
        w.setActiveEffect(None)
        self.delayDisplay("Effect registered")

    def test_effect_apply_through_editor_logic(self):
        from LightUNETRScenarios import effect as effectscenarios

        for overwrite in ("all", "none"):
            for mask in ("everywhere", "outside-all", "intensity"):
                self.delayDisplay(f"Apply: overwrite {overwrite}, mask {mask}")
                effectscenarios.apply_scenario(overwrite, mask, appLogic=slicer.app.applicationLogic())
                slicer.mrmlScene.Clear(0)

    def _deps(self):
        from LightUNETRSlicerLib import environment

        missing = environment.missing_dependencies()
        if missing:
            self.delayDisplay(f"torch/MONAI not installed in Slicer's Python: skipped ({missing})")
        return not missing

    def test_with_model(self):
        from LightUNETRScenarios import segmentation as scenarios
        from LightUNETRSegmentationLib.logic import SegmentationLogic

        if not self._deps():
            return
        bundle = scenarios.make_tiny_bundle(self.tmpdir)
        two = scenarios.make_tiny_bundle(self.tmpdir, name="two", in_channels=2)
        logic = SegmentationLogic(modelsFolder=self.tmpdir)
        self.delayDisplay("Bad inputs give messages")
        scenarios.bad_inputs_scenario(logic, bundle, two)
        slicer.mrmlScene.Clear(0)
        for geometry in ("oblique", "left-handed-oblique"):
            self.delayDisplay(f"Segmentation equals the CLI on the same file, {geometry}")
            scenarios.end_to_end_scenario(logic, self.tmpdir, bundle, geometry)
            slicer.mrmlScene.Clear(0)

    def test_add_zipped_model(self):
        from LightUNETRScenarios import segmentation as scenarios
        from LightUNETRSegmentationLib.logic import SegmentationLogic

        if not self._deps():
            return
        self.delayDisplay("Add model: a zipped bundle, its card shown first")
        scenarios.zipped_bundle_scenario(SegmentationLogic(modelsFolder=self.tmpdir + "/library"), self.tmpdir)

    def _wait(self, done, seconds=600):
        import time

        deadline = time.time() + seconds
        while not done() and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        slicer.app.processEvents()

    def test_widget(self):
        """The GUI path: Apply runs in the background, the timer drives progress, the result appears."""
        import numpy as np

        from LightUNETRScenarios import segmentation as scenarios

        widget = self._widget()
        volume = scenarios.add_volume("widget-input", scenarios.test_pattern((30, 34, 38)).astype(np.float32), "oblique")
        widget._parameterNode.inputVolume = volume
        if not self._deps():
            return
        oldFolder = widget.logic.library.folder
        try:
            widget.logic.setModelsFolder(self.tmpdir)
            scenarios.make_tiny_bundle(self.tmpdir, name="widget")
            widget.refreshModels()
            self.assertEqual(widget.ui.modelComboBox.currentText, "widget")
            self.assertEqual(widget._parameterNode.model, widget.ui.modelComboBox.currentData)
            self.assertTrue(widget.ui.applyButton.enabled)
            widget._parameterNode.device = "cpu"
            widget.ui.applyButton.click()
            self.assertTrue(widget.ui.cancelButton.enabled)
            self._wait(lambda: widget._job is None or widget._job.done)
            self.assertTrue(widget._job.ok, widget._job.message)
            self.assertEqual(widget._job.segmentationNode.GetSegmentation().GetNumberOfSegments(), 3)
            self.assertEqual(widget.ui.progressBar.value, 100)
            self.assertFalse(widget.ui.cancelButton.enabled)
        finally:
            widget.logic.setModelsFolder(oldFolder)

    def test_effect_gui(self):
        """The effect in a Segment Editor widget: Preview (ROI region), leave and re-enter, Apply, Undo."""
        from LightUNETRScenarios import segmentation as scenarios

        if not self._deps():
            return
        logic = shared_logic()
        oldFolder = logic.library.folder
        try:
            logic.setModelsFolder(self.tmpdir)
            scenarios.make_tiny_bundle(self.tmpdir, name="effect")
            w, volume, segmentation = self._editorWithEffect((30, 34, 38))
            keep = segmentation.GetSegmentation().AddEmptySegment("keep", "Keep")
            effect = w.activeEffect().self()
            roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
            bounds = [0.0] * 6
            volume.GetRASBounds(bounds)
            roi.SetCenter([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])
            roi.SetSize([(bounds[1] - bounds[0]) / 2, (bounds[3] - bounds[2]) / 2, (bounds[5] - bounds[4]) / 2])
            effect.regionCombo.setCurrentIndex(effect.regionCombo.findData("roi"))
            effect.roiSelector.setCurrentNode(roi)
            effect.deviceCombo.setCurrentIndex(effect.deviceCombo.findText("cpu"))
            effect.onPreview()
            session = effect.session
            self.assertIsNotNone(session, effect.statusLabel.text)
            w.setActiveEffect(None)  # leaving the effect keeps the run
            self._wait(lambda: session.done)
            self.assertTrue(session.ready, session.job.message)
            w.setActiveEffectByName("Light-UNETR")
            # A segment name typed into the label table after Preview is the one Apply writes.
            effect.mappingTable.item(0, 1).setText("Liver (AI)")  # row 0: label 1 (no background row)
            n_before = segmentation.GetSegmentation().GetNumberOfSegments()
            effect.onApply()
            self.assertIsNone(effect.session)
            self.assertGreater(segmentation.GetSegmentation().GetNumberOfSegments(), n_before)
            self.assertTrue(segmentation.GetSegmentation().GetSegmentIdBySegmentName("Liver (AI)"))
            w.undo()
            self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), n_before)
            self.assertIsNotNone(segmentation.GetSegmentation().GetSegment(keep))
            w.setActiveEffect(None)
        finally:
            logic.setModelsFolder(oldFolder)
        self.delayDisplay("Effect: preview, leave, apply, undo")
