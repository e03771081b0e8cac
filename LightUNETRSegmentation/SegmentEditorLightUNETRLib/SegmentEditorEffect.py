"""The "Light-UNETR" Segment Editor effect: a thin Qt layer over ``LightUNETRSegmentationLib.effectlogic``
(Qt-free, tested on slicer-core). Registered by the LightUNETRSegmentation module at start-up; loaded only
inside Slicer, as a module named after this folder (``qSlicerSegmentEditorScriptedEffect::setPythonSource``),
so this folder is not a package and nothing imports it.

Every call below into Slicer was looked up in Slicer's source at v5.10.0 and v5.12.x (docs/slicer.md,
"API audit"); the tests in Testing/pytest/test_slicer_contracts.py check the ones that can be checked without Slicer.
"""

import os

import qt
import slicer
from SegmentEditorEffects import *  # noqa: F401,F403 (AbstractScriptedSegmentEditorEffect)

from LightUNETRSlicerLib import parameters, volumeio
from LightUNETRSegmentationLib import effectlogic
from LightUNETRSlicerLib.dependencydialog import DependencyInstaller
from LightUNETRSegmentationLib.logic import shared_logic

__all__ = ["SegmentEditorEffect"]

REGION_WHOLE, REGION_ROI, REGION_VIEW = "whole", "roi", "view"
ICON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Icons",
                    "SegmentEditorLightUNETR.png")


class EffectSegmentWriter:
    """:class:`effectlogic.SegmentEditorLogicWriter`'s counterpart over the effect itself: writes go through
    ``scriptedEffect.modifySegmentByLabelmap`` (masking, intensity range, overwrite) after
    ``saveStateForUndo``."""

    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect

    def editor_node(self):
        return self.scriptedEffect.parameterSetNode()

    def reference_geometry(self):
        return self.scriptedEffect.defaultModifierLabelmap()

    def save_state_for_undo(self):
        self.scriptedEffect.saveStateForUndo()

    def modify(self, segmentationNode, segmentId, modifier, mode):
        effect = slicer.qSlicerSegmentEditorAbstractEffect
        code = {effectlogic.MODIFY_REMOVE: effect.ModificationModeRemove,
                effectlogic.MODIFY_ADD: effect.ModificationModeAdd}[mode]
        self.scriptedEffect.modifySegmentByLabelmap(segmentationNode, segmentId, modifier, code)


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):  # noqa: F405
    """Segment the source volume with a Light-UNETR model: Preview (background run), then Apply (undoable,
    through the editor's masking and overwrite rules) or Cancel."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Light-UNETR"
        scriptedEffect.title = "Light-UNETR"
        scriptedEffect.perSegment = False
        scriptedEffect.requireSegments = False
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)  # noqa: F405
        self.session = None
        self.timer = None
        self.installer = None
        self._sceneObservers = []
        self._libraryListener = None
        self._tableModelPath = None  # the model whose labels the table shows (with the user's segment names)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        return qt.QIcon(ICON) if os.path.exists(ICON) else qt.QIcon()

    def helpText(self):
        return ("<html>Segment the source volume with a Light-UNETR model.<p>"
                "Choose a model and the region (whole volume, the voxels around an ROI, or what a slice view "
                "shows), click <b>Preview</b>: the network runs in a background process and Slicer stays "
                "responsive; you may leave the Segment Editor meanwhile. <b>Apply</b> writes each model label "
                "into the segment chosen for it (missing segments are created) inside the region only, "
                "following the editor's <i>Masking</i> settings (editable area, intensity range, overwrite "
                "of other segments); Undo reverts it. <b>Cancel</b> stops the run or discards the preview."
                "</html>")

    @property
    def logic(self):
        return shared_logic(modelsFolder=qt.QSettings().value(parameters.MODELS_FOLDER_SETTING) or None)

    # ------------------------------------------------------------------ GUI
    def setupOptionsFrame(self):
        self.modelCombo = qt.QComboBox()
        self.modelCombo.toolTip = "Model bundles of the Light-UNETR model library (Light-UNETR Segmentation module)"
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelCombo)

        self.regionCombo = qt.QComboBox()
        self.regionCombo.addItem("Whole volume", REGION_WHOLE)
        self.regionCombo.addItem("Around an ROI", REGION_ROI)
        self.regionCombo.addItem("Shown in a slice view", REGION_VIEW)
        self.regionCombo.toolTip = "Only this part of the source volume is segmented and changed by Apply"
        self.scriptedEffect.addLabeledOptionsWidget("Region:", self.regionCombo)

        self.roiSelector = slicer.qMRMLNodeComboBox()
        self.roiSelector.nodeTypes = ["vtkMRMLMarkupsROINode"]
        self.roiSelector.noneEnabled = True
        self.roiSelector.addEnabled = True
        self.roiSelector.removeEnabled = False
        self.roiSelector.setMRMLScene(slicer.mrmlScene)
        self.roiLabel = self.scriptedEffect.addLabeledOptionsWidget("ROI:", self.roiSelector)

        self.viewCombo = qt.QComboBox()
        self.viewCombo.toolTip = "The slice view whose visible area is the region"
        self.viewLabel = self.scriptedEffect.addLabeledOptionsWidget("Slice view:", self.viewCombo)

        self.deviceCombo = qt.QComboBox()
        for device in parameters.DEVICES:
            self.deviceCombo.addItem(device)
        self.deviceCombo.toolTip = "auto: a CUDA GPU when there is one" + (", then Apple MPS" if "mps" in parameters.DEVICES else "") + ", else the CPU"
        self.scriptedEffect.addLabeledOptionsWidget("Device:", self.deviceCombo)

        self.mappingTable = qt.QTableWidget()
        self.mappingTable.setColumnCount(2)
        self.mappingTable.setHorizontalHeaderLabels(["Model label", "Segment (name; created if missing)"])
        self.mappingTable.horizontalHeader().setStretchLastSection(True)
        self.scriptedEffect.addLabeledOptionsWidget("Labels:", self.mappingTable)

        self.previewButton = qt.QPushButton("Preview")
        self.previewButton.toolTip = "Segment the region in the background and show the result as a preview"
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.toolTip = "Write the preview into the segments (undoable)"
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.toolTip = "Stop the run, or discard the preview"
        row = qt.QHBoxLayout()
        for b in (self.previewButton, self.applyButton, self.cancelButton):
            row.addWidget(b)
        self.scriptedEffect.addOptionsWidget(row)
        self.progressBar = qt.QProgressBar()
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self.modelCombo.connect("currentIndexChanged(int)", self.onModelChanged)
        self.regionCombo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.viewCombo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.deviceCombo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateMRMLFromGUI)
        self.previewButton.connect("clicked()", self.onPreview)
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton.connect("clicked()", self.onCancel)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onTimer)
        self.installer = DependencyInstaller()
        self._sceneObservers = [slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)]
        self._libraryListener = self.refreshModels
        self.logic.library.add_listener(self._libraryListener)
        self.refreshModels()
        self.updateButtons()

    def activate(self):
        # A model may have been trained or added since the effect was last shown; the layout may have changed.
        self.refreshModels()
        self.refreshViews()
        if self.session is not None:
            self.session.set_preview_visible(True)
        self.updateButtons()

    def layoutChanged(self):
        self.refreshViews()

    def deactivate(self):
        # Leaving the effect (another effect, another module) keeps a running job and a finished preview:
        # only hide the preview; Cancel, a scene close or cleanup end the session.
        if self.session is not None:
            self.session.set_preview_visible(False)

    def cleanup(self):
        self.discardSession()
        if self.timer is not None:
            self.timer.stop()
        if self.installer is not None:
            self.installer.cleanup()
        for tag in self._sceneObservers:
            slicer.mrmlScene.RemoveObserver(tag)
        self._sceneObservers = []
        if self._libraryListener is not None:
            self.logic.library.remove_listener(self._libraryListener)
            self._libraryListener = None

    def onSceneStartClose(self, caller=None, event=None):
        self.discardSession()
        self.updateButtons()

    def _parameter(self, name, default=""):
        # parameter() logs an error for a parameter that was never set (an empty default is not stored).
        return self.scriptedEffect.parameter(name) if self.scriptedEffect.parameterDefined(name) else default

    def refreshModels(self):
        models, _ = self.logic.models()
        selected, message = parameters.choose_model(self._parameter("Model") or self.modelCombo.currentData or "", models)
        self.modelCombo.blockSignals(True)
        self.modelCombo.clear()
        for m in models:
            self.modelCombo.addItem(m.name, m.path)
            self.modelCombo.setItemData(self.modelCombo.count - 1, m.summary(), qt.Qt.ToolTipRole)
        self.modelCombo.setCurrentIndex(self.modelCombo.findData(selected) if selected else -1)
        self.modelCombo.blockSignals(False)
        if not models:
            self.statusLabel.text = ("No model installed yet: add one in the Light-UNETR Segmentation module "
                                     f"(models folder {self.logic.library.folder}).")
        elif message:
            self.statusLabel.text = message
        self.onModelChanged()

    def refreshViews(self):
        layoutManager = slicer.app.layoutManager()
        names = list(layoutManager.sliceViewNames()) if layoutManager is not None else []
        current = self._parameter("View") or self.viewCombo.currentText
        self.viewCombo.blockSignals(True)
        self.viewCombo.clear()
        for name in names:
            self.viewCombo.addItem(name)
        if current in names:
            self.viewCombo.setCurrentIndex(names.index(current))
        self.viewCombo.blockSignals(False)

    def onModelChanged(self, index=None):
        path = self.modelCombo.currentData
        # refreshModels runs on every activate() and library change: rebuilding the table of the same model
        # would drop the segment names the user typed.
        if path != self._tableModelPath:
            self._fillMappingTable(path)
        self.updateMRMLFromGUI()
        self.updateButtons()

    def _fillMappingTable(self, path):
        self._tableModelPath = path
        self.mappingTable.setRowCount(0)
        if path:
            try:
                model = self.logic.resolveModel(path)
            except Exception as exc:  # noqa: BLE001 - a damaged bundle is shown to the user
                self.statusLabel.text = str(exc)
            else:
                self.mappingTable.setRowCount(len(model.labels))
                for row, spec in enumerate(model.labels):
                    item = qt.QTableWidgetItem(f"{spec.value}: {spec.name}")
                    item.setFlags(qt.Qt.ItemIsEnabled)
                    self.mappingTable.setItem(row, 0, item)
                    self.mappingTable.setItem(row, 1, qt.QTableWidgetItem(spec.name))

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Model", "")
        self.scriptedEffect.setParameterDefault("Region", REGION_WHOLE)
        self.scriptedEffect.setParameterDefault("View", "Red")
        self.scriptedEffect.setParameterDefault("Device", parameters.DEFAULT_DEVICE)

    def updateGUIFromMRML(self):
        region = self._parameter("Region", REGION_WHOLE)
        device = parameters.valid_choice(self._parameter("Device"), parameters.DEVICES, parameters.DEFAULT_DEVICE)
        for widget, index in ((self.regionCombo, self.regionCombo.findData(region)),
                              (self.deviceCombo, self.deviceCombo.findText(device)),
                              (self.viewCombo, self.viewCombo.findText(self._parameter("View"))),
                              (self.modelCombo, self.modelCombo.findData(self._parameter("Model")))):
            if index >= 0 and index != widget.currentIndex:
                widget.blockSignals(True)
                widget.setCurrentIndex(index)
                widget.blockSignals(False)
        self.roiSelector.blockSignals(True)
        self.roiSelector.setCurrentNode(self.scriptedEffect.nodeReference("ROI"))
        self.roiSelector.blockSignals(False)
        self._showRegionWidgets()
        self.updateButtons()

    def updateMRMLFromGUI(self, *args):
        self._showRegionWidgets()
        # The editor widget builds every effect's options before it has an editor node
        # (qMRMLSegmentEditorWidget: updateEffectList in init); parameters can be written only with one.
        if self.scriptedEffect.parameterSetNode() is None:
            return
        self.scriptedEffect.setParameter("Model", self.modelCombo.currentData or "")
        self.scriptedEffect.setParameter("Region", self.regionCombo.currentData or REGION_WHOLE)
        self.scriptedEffect.setParameter("Device", self.deviceCombo.currentText or parameters.DEFAULT_DEVICE)
        if self.viewCombo.currentText:
            self.scriptedEffect.setParameter("View", self.viewCombo.currentText)
        self.scriptedEffect.setNodeReference("ROI", self.roiSelector.currentNode())

    def _showRegionWidgets(self):
        region = self.regionCombo.currentData
        for widget, shown in ((self.roiSelector, region == REGION_ROI), (self.roiLabel, region == REGION_ROI),
                              (self.viewCombo, region == REGION_VIEW), (self.viewLabel, region == REGION_VIEW)):
            widget.visible = shown

    def _mapping(self, model):
        mapping = {}
        for row, spec in enumerate(model.labels):
            item = self.mappingTable.item(row, 1)
            if item and item.text().strip():
                mapping[spec.value] = item.text().strip()
        return mapping

    def _regionBox(self, source):
        """(box or None, message): the inclusive IJK box of the source volume to segment."""
        region = self.regionCombo.currentData
        if region == REGION_ROI:
            roi = self.roiSelector.currentNode()
            if roi is None:
                return None, "Select an ROI (or choose the whole volume)."
            box = volumeio.roi_ijk_box(source, roi)
            return box, None if box is not None else "The ROI does not overlap the source volume; move or resize it."
        if region == REGION_VIEW:
            layoutManager = slicer.app.layoutManager()
            widget = layoutManager.sliceWidget(self.viewCombo.currentText) if layoutManager and self.viewCombo.currentText else None
            if widget is None:
                return None, "The layout has no such slice view; choose another region."
            box = effectlogic.slice_view_box(source, widget.mrmlSliceNode())
            return box, None if box is not None else "The slice view does not show the source volume."
        return effectlogic.whole_volume_box(source), None

    # ------------------------------------------------------------------ actions
    def onPreview(self):
        if not self.installer.ensure(onReady=self.onPreview):
            return
        editorNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = editorNode.GetSegmentationNode()
        source = editorNode.GetSourceVolumeNode()
        if segmentationNode is None or source is None:
            self.statusLabel.text = "Select a segmentation and a source volume first."
            return
        if not self.modelCombo.currentData:
            self.statusLabel.text = "Select a model (add one in the Light-UNETR Segmentation module)."
            return
        box, message = self._regionBox(source)
        if message:
            self.statusLabel.text = message
            return
        try:
            model = self.logic.resolveModel(self.modelCombo.currentData)
        except Exception as exc:  # noqa: BLE001 - removed or damaged since the list was filled
            self.statusLabel.text = str(exc)
            return
        self.discardSession()
        self.session = effectlogic.EffectSession(self.logic, segmentationNode, source, model,
                                                 device=self.deviceCombo.currentText, box=box,
                                                 mapping=self._mapping(model)).start()
        if self.session.done:  # refused at once (bad input): nothing to apply or cancel
            self.statusLabel.text = self.session.job.message
            self.discardSession()
        else:
            self.statusLabel.text = "Starting..."
            self.timer.start()
        self.updateButtons()

    def onTimer(self):
        session = self.session
        if session is None:
            self.timer.stop()
            return
        still = session.poll()
        job = session.job
        self.progressBar.value = int(100 * job.progress)
        self.statusLabel.text = job.message + (f" (about {job.eta_s:.0f} s left)" if job.eta_s else "")
        if not still:
            self.timer.stop()
            if session.ready:
                display = session.preview.GetDisplayNode()
                if display is None:
                    session.preview.CreateDefaultDisplayNodes()
                    display = session.preview.GetDisplayNode()
                display.SetOpacity(0.6)
                session.set_preview_visible(self.scriptedEffect.active())
                self.statusLabel.text = "Preview ready: Apply to keep it, Cancel to discard it."
            else:
                self.statusLabel.text = job.message
                self.session = None
            self.updateButtons()

    def onApply(self):
        session = self.session
        if session is None or not session.ready:
            return
        editorNode = self.scriptedEffect.parameterSetNode()
        if not session.matches(editorNode.GetSegmentationNode(), editorNode.GetSourceVolumeNode()):
            self.statusLabel.text = (f"The preview was made for segmentation '{session.segmentationNode.GetName()}' and "
                                     f"volume '{session.sourceVolumeNode.GetName()}'; select them again, or Cancel.")
            return
        if self._tableModelPath == session.model.path:  # the segment names as the table shows them now
            session.mapping = self._mapping(session.model)
        try:
            with slicer.util.tryWithErrorDisplay("Could not apply the Light-UNETR result.", waitCursor=True):
                session.accept(EffectSegmentWriter(self.scriptedEffect))
                self.session = None
                self.statusLabel.text = "Applied (Undo reverts it)."
        finally:
            self.updateButtons()

    def onCancel(self):
        running = self.session is not None and not self.session.done
        self.discardSession()
        self.statusLabel.text = "Run stopped." if running else "Preview discarded."
        self.updateButtons()

    def discardSession(self):
        if self.timer is not None:
            self.timer.stop()
        if self.session is not None:
            self.session.discard()
            self.session = None

    def updateButtons(self):
        running = self.session is not None and not self.session.done
        self.previewButton.enabled = not running and bool(self.modelCombo.currentData)
        self.applyButton.enabled = self.session is not None and self.session.ready
        self.cancelButton.enabled = self.session is not None
        # The label table belongs to the session's model until it is applied or cancelled.
        self.modelCombo.enabled = self.session is None
