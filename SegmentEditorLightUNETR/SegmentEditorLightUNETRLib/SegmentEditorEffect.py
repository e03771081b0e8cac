"""The "Light-UNETR" Segment Editor effect (thin Qt layer over effectlogic.EffectSession)."""

import os

import qt
import slicer
from SegmentEditorEffects import *  # noqa: F401,F403 (AbstractScriptedSegmentEditorEffect)

from SegmentEditorLightUNETRLib import effectlogic

__all__ = ["SegmentEditorEffect"]

REGION_WHOLE, REGION_ROI, REGION_VIEW = "whole", "roi", "view"


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Segment the source volume with a Light-UNETR model: preview, then Apply (undoable) or Cancel."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Light-UNETR"
        scriptedEffect.perSegment = False
        scriptedEffect.requireSegments = False
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.session = None
        self.timer = None
        self._logic = None

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        path = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def helpText(self):
        return ("<html>Segment the source volume with a Light-UNETR model.<p>"
                "Choose a model and the region (whole volume, an ROI, or what the red slice view shows), "
                "click <b>Preview</b>: the network runs in the background (Slicer stays responsive). "
                "<b>Apply</b> copies the result into the segments chosen for each model label (missing "
                "segments are created), only inside the editable area; it can be undone. "
                "<b>Cancel</b> stops the run or discards the preview.</html>")

    # ------------------------------------------------------------------ GUI
    @property
    def logic(self):
        if self._logic is None:
            from LightUNETRSegmentationLib.logic import SegmentationLogic

            folder = qt.QSettings().value("LightUNETR/ModelsFolder") or None
            self._logic = SegmentationLogic(modelsFolder=folder)
        return self._logic

    def setupOptionsFrame(self):
        self.modelCombo = qt.QComboBox()
        self.modelCombo.toolTip = "Model bundles of the Light-UNETR Segmentation module's models folder"
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelCombo)

        self.regionCombo = qt.QComboBox()
        self.regionCombo.addItem("Whole volume", REGION_WHOLE)
        self.regionCombo.addItem("ROI", REGION_ROI)
        self.regionCombo.addItem("Region shown in the Red view", REGION_VIEW)
        self.scriptedEffect.addLabeledOptionsWidget("Region:", self.regionCombo)

        self.roiSelector = slicer.qMRMLNodeComboBox()
        self.roiSelector.nodeTypes = ["vtkMRMLMarkupsROINode"]
        self.roiSelector.noneEnabled = True
        self.roiSelector.addEnabled = True
        self.roiSelector.setMRMLScene(slicer.mrmlScene)
        self.scriptedEffect.addLabeledOptionsWidget("ROI:", self.roiSelector)

        self.deviceCombo = qt.QComboBox()
        self.deviceCombo.addItems(["auto", "cpu", "cuda", "mps"])
        self.scriptedEffect.addLabeledOptionsWidget("Device:", self.deviceCombo)

        self.mappingTable = qt.QTableWidget()
        self.mappingTable.setColumnCount(2)
        self.mappingTable.setHorizontalHeaderLabels(["Model label", "Segment (name; created if missing)"])
        self.mappingTable.horizontalHeader().setStretchLastSection(True)
        self.scriptedEffect.addLabeledOptionsWidget("Labels:", self.mappingTable)

        self.progressBar = qt.QProgressBar()
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        self.previewButton = qt.QPushButton("Preview")
        self.applyButton = qt.QPushButton("Apply")
        self.cancelButton = qt.QPushButton("Cancel")
        row = qt.QHBoxLayout()
        for b in (self.previewButton, self.applyButton, self.cancelButton):
            row.addWidget(b)
        self.scriptedEffect.addOptionsWidget(row)
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self.modelCombo.connect("currentIndexChanged(int)", self.onModelChanged)
        self.regionCombo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.deviceCombo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.previewButton.connect("clicked()", self.onPreview)
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton.connect("clicked()", self.onCancel)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onTimer)
        self.refreshModels()
        self.updateButtons()

    def refreshModels(self):
        models, _ = self.logic.models()
        self.modelCombo.blockSignals(True)
        self.modelCombo.clear()
        for m in models:
            self.modelCombo.addItem(m.name, m.path)
        self.modelCombo.blockSignals(False)
        self.onModelChanged()

    def onModelChanged(self, index=None):
        path = self.modelCombo.currentData
        self.mappingTable.setRowCount(0)
        if not path:
            return
        try:
            model = self.logic.resolveModel(path)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.statusLabel.text = str(exc)
            return
        self.mappingTable.setRowCount(len(model.labels))
        for row, spec in enumerate(model.labels):
            item = qt.QTableWidgetItem(f"{spec.value}: {spec.name}")
            item.setFlags(qt.Qt.ItemIsEnabled)
            self.mappingTable.setItem(row, 0, item)
            self.mappingTable.setItem(row, 1, qt.QTableWidgetItem(spec.name))
        self.updateMRMLFromGUI()

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Model", "")
        self.scriptedEffect.setParameterDefault("Region", REGION_WHOLE)
        self.scriptedEffect.setParameterDefault("Device", "auto")

    def updateGUIFromMRML(self):
        for combo, name in ((self.regionCombo, "Region"),):
            index = combo.findData(self.scriptedEffect.parameter(name))
            if index >= 0:
                combo.blockSignals(True)
                combo.setCurrentIndex(index)
                combo.blockSignals(False)
        self.deviceCombo.blockSignals(True)
        self.deviceCombo.setCurrentText(self.scriptedEffect.parameter("Device") or "auto")
        self.deviceCombo.blockSignals(False)
        index = self.modelCombo.findData(self.scriptedEffect.parameter("Model"))
        if index >= 0 and index != self.modelCombo.currentIndex:
            self.modelCombo.setCurrentIndex(index)
        self.roiSelector.enabled = self.regionCombo.currentData == REGION_ROI
        self.updateButtons()

    def updateMRMLFromGUI(self, *args):
        self.scriptedEffect.setParameter("Model", self.modelCombo.currentData or "")
        self.scriptedEffect.setParameter("Region", self.regionCombo.currentData or REGION_WHOLE)
        self.scriptedEffect.setParameter("Device", self.deviceCombo.currentText)
        self.roiSelector.enabled = self.regionCombo.currentData == REGION_ROI

    def _mapping(self):
        mapping = {}
        model = self.logic.resolveModel(self.modelCombo.currentData)
        for row, spec in enumerate(model.labels):
            item = self.mappingTable.item(row, 1)
            if item and item.text().strip():
                mapping[spec.value] = item.text().strip()
        return mapping

    def _regionRoi(self):
        region = self.regionCombo.currentData
        if region == REGION_ROI:
            return self.roiSelector.currentNode()
        if region == REGION_VIEW:
            sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
            xyToRas = sliceNode.GetXYToRAS()
            dims = sliceNode.GetDimensions()
            corners = [xyToRas.MultiplyPoint([x, y, 0, 1])[:3] for x in (0, dims[0]) for y in (0, dims[1])]
            volume = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
            b = [0.0] * 6
            volume.GetRASBounds(b)
            xs, ys, zs = zip(*corners)
            bounds = [min(xs), max(xs), min(ys), max(ys), min(zs), max(zs)]
            # The view is a plane: keep the volume's full extent along the slice normal.
            for axis in range(3):
                if bounds[2 * axis + 1] - bounds[2 * axis] < 1e-3:
                    bounds[2 * axis], bounds[2 * axis + 1] = b[2 * axis], b[2 * axis + 1]
            return effectlogic.roi_from_ras_bounds(bounds)
        return None

    # ------------------------------------------------------------------ actions
    def onPreview(self):
        from LightUNETRSegmentationLib import environment

        ok, message = environment.ensure_dependencies(confirm=slicer.util.confirmOkCancelDisplay)
        if not ok:
            slicer.util.errorDisplay(message)
            return
        self.discardSession()
        editorNode = self.scriptedEffect.parameterSetNode()
        segNode = editorNode.GetSegmentationNode()
        source = editorNode.GetSourceVolumeNode()
        if not self.modelCombo.currentData:
            self.statusLabel.text = "Select a model (add one in the Light-UNETR Segmentation module)."
            return
        roi = self._regionRoi()
        self._viewRoi = roi if roi is not None and roi.GetName().startswith("__LightUNETR") else None
        self.session = effectlogic.EffectSession(self.logic, segNode, source, self.modelCombo.currentData,
                                                 device=self.deviceCombo.currentText, roiNode=roi,
                                                 mapping=self._mapping()).start()
        if self.session.done:
            self.statusLabel.text = self.session.job.message
        else:
            self.timer.start()
            self._showPreview()
        self.updateButtons()

    def _showPreview(self):
        p = self.session.preview if self.session else None
        if p is not None:
            p.CreateDefaultDisplayNodes()
            p.GetDisplayNode().SetOpacity(0.6)

    def onTimer(self):
        if self.session is None:
            self.timer.stop()
            return
        still = self.session.poll()
        job = self.session.job
        self.progressBar.value = int(100 * job.progress)
        self.statusLabel.text = job.message + (f" (about {job.eta_s:.0f} s left)" if job.eta_s else "")
        if not still:
            self.timer.stop()
            self._removeViewRoi()
            if job.ok:
                self.statusLabel.text = "Preview ready: Apply to keep it, Cancel to discard it."
                self._showPreview()
            else:
                self.statusLabel.text = job.message
            self.updateButtons()

    def onApply(self):
        if self.session is None or not self.session.job or not self.session.job.ok:
            return
        self.scriptedEffect.saveStateForUndo()
        editorNode = self.scriptedEffect.parameterSetNode()
        with slicer.util.tryWithErrorDisplay("Could not apply the Light-UNETR result.", waitCursor=True):
            self.session.accept(editorNode)
        self.session = None
        self.statusLabel.text = "Applied."
        self.updateButtons()

    def onCancel(self):
        self.discardSession()
        self.statusLabel.text = "Cancelled."
        self.updateButtons()

    def discardSession(self):
        if self.timer:
            self.timer.stop()
        if self.session is not None:
            self.session.discard()
            self.session = None
        self._removeViewRoi()

    def _removeViewRoi(self):
        roi = getattr(self, "_viewRoi", None)
        if roi is not None and roi.GetScene() is not None:
            slicer.mrmlScene.RemoveNode(roi)
        self._viewRoi = None

    def updateButtons(self):
        running = self.session is not None and not self.session.done
        ready = self.session is not None and self.session.done and self.session.job is not None and self.session.job.ok
        self.previewButton.enabled = not running
        self.applyButton.enabled = ready
        self.cancelButton.enabled = self.session is not None

    def deactivate(self):
        self.discardSession()

    def cleanup(self):
        self.discardSession()
        if self._logic is not None:
            self._logic.shutdown()
