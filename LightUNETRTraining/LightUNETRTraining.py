"""LightUNETRTraining: train or fine-tune Light-UNETR models (CSE semi-supervised) from the cases loaded in
Slicer.

Thin Slicer module: the widget wires the .ui to :mod:`LightUNETRTrainingLib.logic`, which is Qt-free and
tested with pytest against a real MRML scene (slicer-core). The self-test at the bottom runs the same
scenarios (:mod:`LightUNETRTrainingLib.scenarios`) inside a real Slicer.
"""

import logging
import os

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


class LightUNETRTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Light-UNETR Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy", "LightUNETRSegmentation"]
        self.parent.contributors = ["LightUNETR developers"]
        self.parent.helpText = (
            "Train or fine-tune a Light-UNETR model on the volumes and segmentations loaded in Slicer, with CSE "
            "semi-supervised learning (unlabelled volumes help) or supervised only. Each volume is a case: labelled "
            "(with its segmentation; segment names are the classes), unlabelled, validation or ignored. Training runs "
            "in a background process with live loss/Dice curves; Stop writes a checkpoint and Resume continues. The "
            "new model appears in Light-UNETR Segmentation and segments the unlabelled cases.<br>Console: "
            "<code>logic = slicer.util.getModuleLogic('LightUNETRTraining'); job = logic.run([(vol, seg)], [vol2], "
            "{'iterations': 500})</code>."
        )
        self.parent.acknowledgementText = "Light-UNETR / CSE (CUHK-AIM-Group). Extension by the LightUNETR developers."


ROLE_ITEMS = ["labeled", "unlabeled", "validation", "ignore"]
COL_VOLUME, COL_SEGMENTATION, COL_ROLE, COL_PROBLEMS = range(4)


class LightUNETRTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.table = None
        self._job = None
        self._timer = None
        self._shownLog = 0

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LightUNETRTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LightUNETRTrainingLogic()

        self.ui.recipeComboBox.addItems(["cse-reference", "cse-paper", "supervised"])
        self.ui.deviceComboBox.addItems(["auto", "cpu", "cuda", "mps"])
        self.ui.modalityComboBox.addItems(["MR", "CT", "other"])
        self.ui.caseTableWidget.setColumnCount(4)
        self.ui.caseTableWidget.setHorizontalHeaderLabels(["Volume", "Segmentation", "Role", "Problems"])
        self.ui.caseTableWidget.horizontalHeader().setStretchLastSection(True)

        self.ui.refreshCasesButton.connect("clicked(bool)", self.refreshCases)
        self.ui.folderComboBox.connect("currentItemChanged(vtkIdType)", lambda item: self.refreshCases())
        self.ui.checkButton.connect("clicked(bool)", self.onCheck)
        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)

        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self.onTimer)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.refreshCases()
        self.updateButtons()

    def cleanup(self):
        self.removeObservers()
        if self._timer:
            self._timer.stop()
        if self.logic:
            self.logic.shutdown()

    def enter(self):
        self.refreshCases()

    def onSceneEndClose(self, caller, event):
        # The logic already stopped the running job at StartCloseEvent (checkpoint written).
        self.onTimer()
        self.refreshCases()

    # ------------------------------------------------------------------ case table
    def refreshCases(self):
        """Rebuild the table from the scene, keeping the roles the user already chose."""
        previous = {r.volume.GetID(): r.role for r in self.table.rows} if self.table is not None else {}
        item = self.ui.folderComboBox.currentItem() or None
        self.table = self.logic.caseTable(item)
        for row in self.table.rows:
            role = previous.get(row.volume.GetID())
            if role is not None and (row.segmentation is not None or role in ("unlabeled", "ignore")):
                row.role = role
        self._fillTable()

    def _fillTable(self):
        w = self.ui.caseTableWidget
        w.setRowCount(len(self.table.rows))
        for n, row in enumerate(self.table.rows):
            w.setItem(n, COL_VOLUME, qt.QTableWidgetItem(row.name))
            w.setItem(n, COL_SEGMENTATION, qt.QTableWidgetItem(row.segmentation.GetName() if row.segmentation else ""))
            combo = qt.QComboBox()
            combo.addItems(ROLE_ITEMS)
            combo.setCurrentText(row.role)
            combo.connect("currentTextChanged(QString)", lambda text, r=row: self.onRoleChanged(r, text))
            w.setCellWidget(n, COL_ROLE, combo)
            problems = qt.QTableWidgetItem("; ".join(row.problems))
            problems.setToolTip("\n".join(row.problems))
            if row.problems:
                problems.setForeground(qt.QBrush(qt.QColor("red")))
            w.setItem(n, COL_PROBLEMS, problems)
        w.resizeColumnsToContents()
        self.ui.classesLabel.text = ", ".join(self.table.classes) or "(no segments yet)"

    def onRoleChanged(self, row, role):
        row.role = role
        self.ui.classesLabel.text = ", ".join(self.table.classes) or "(no segments yet)"

    def config(self):
        from LightUNETRTrainingLib.config import TrainingConfig

        text = self.ui.patchSizeLineEdit.text.replace("x", ",")
        try:
            patch = tuple(int(p) for p in text.split(",") if p.strip())
            patch = patch * 3 if len(patch) == 1 else patch
        except ValueError:
            patch = ()
        return TrainingConfig(
            name=self.ui.modelNameLineEdit.text.strip(),
            recipe=self.ui.recipeComboBox.currentText,
            iterations=self.ui.iterationsSpinBox.value,
            patch_size=patch,
            batch_labeled=self.ui.batchLabeledSpinBox.value,
            batch_unlabeled=self.ui.batchUnlabeledSpinBox.value,
            val_every=self.ui.valEverySpinBox.value,
            device=self.ui.deviceComboBox.currentText,
            inference_device=self.ui.deviceComboBox.currentText,
            modality=self.ui.modalityComboBox.currentText,
            segment_unlabeled=self.ui.segmentUnlabeledCheckBox.checked,
            rank_uncertainty=self.ui.rankUncertaintyCheckBox.checked,
        )

    def onCheck(self):
        ok = self.table.check(self.config())
        self._fillTable()
        self.setStatus("Ready to train." if ok else "Fix these first:\n" + "\n".join(self.table.problems)
                       + ("\n(see the Problems column)" if any(r.problems for r in self.table.rows) else ""))
        return ok

    # ------------------------------------------------------------------ run
    def onStart(self):
        from LightUNETRSegmentationLib import environment

        ok, message = environment.ensure_dependencies(confirm=slicer.util.confirmOkCancelDisplay)
        if not ok:
            slicer.util.errorDisplay(message)
            return
        if not self.onCheck():
            return
        self.ui.logTextEdit.clear()
        self._shownLog = 0
        self._job = self.logic.start(self.table, self.config())
        if self._job.plot is not None:
            slicer.modules.plots.logic().ShowChartInLayout(self._job.plot.chart)
        self._monitor()

    def onStop(self):
        if self._job is not None:
            self._job.stop()
            self.setStatus("Stopping (writing a checkpoint)...")

    def onResume(self):
        if self._job is not None and self._job.status in ("stopped", "cancelled"):
            self._shownLog = len(self._job.log)
            self._job.resume()
            self._monitor()

    def _monitor(self):
        if self._job.done:
            self.onFinished()
            return
        self._timer.start()
        self.updateButtons()

    def onTimer(self):
        job = self._job
        if job is None:
            self._timer.stop()
            return
        still = job.poll()
        self.updateProgress()
        if not still:
            self.onFinished()

    def updateProgress(self):
        job = self._job
        self.ui.progressBar.value = int(round(100 * job.progress))
        text = f"{job.status}: {job.message}"
        if job.status == "running" and job.iteration:
            text = f"Iteration {job.iteration}/{job.total}"
            if job.it_per_s:
                text += f", {job.it_per_s:.2f} it/s"
            if job.eta_s:
                text += f", about {job.eta_s / 60:.0f} min left"
            if job.loss:
                text += "\nloss " + ", ".join(f"{k} {v:.3f}" for k, v in job.loss.items() if v is not None)
            if job.dice is not None:
                text += f"\nvalidation Dice {job.dice:.3f} (best {job.best_dice or job.dice:.3f})"
        self.setStatus(text)
        log = job.log
        for line in log[self._shownLog:]:
            self.ui.logTextEdit.appendPlainText(line)
        self._shownLog = len(log)

    def onFinished(self):
        self._timer.stop()
        job = self._job
        self.updateProgress()
        self.setStatus(job.message)
        if job.ranking:
            self.ui.logTextEdit.appendPlainText("Unlabelled cases by mean uncertainty (review these first):")
            for r in job.ranking:
                self.ui.logTextEdit.appendPlainText(f"  {r['volume'].GetName()}: {r['meanUncertainty']:.4f}")
        if job.status == "failed":
            slicer.util.errorDisplay(job.message, detailedText="\n".join(job.log[-40:]))
        self.updateButtons()

    def setStatus(self, text):
        self.ui.statusLabel.text = text

    def updateButtons(self):
        job = self._job
        running = job is not None and not job.done
        self.ui.startButton.enabled = not running
        self.ui.stopButton.enabled = running
        self.ui.resumeButton.enabled = job is not None and job.status in ("stopped", "cancelled")


class LightUNETRTrainingLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer wrapper of :class:`LightUNETRTrainingLib.logic.TrainingLogic` (all behaviour is there);
    uses the LightUNETRSegmentation module's logic for its model library and queue."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from LightUNETRTrainingLib.logic import TrainingLogic

        segmentationLogic = slicer.util.getModuleLogic("LightUNETRSegmentation")
        folder = qt.QSettings().value("LightUNETR/TrainingFolder") or None
        self.core = TrainingLogic(segmentationLogic=segmentationLogic, jobsFolder=folder)

    def __getattr__(self, name):  # forward the console API (setup, start, run, caseTable, ...)
        core = self.__dict__.get("core")
        if core is None:
            raise AttributeError(name)
        return getattr(core, name)


class LightUNETRTrainingTest(ScriptedLoadableModuleTest):
    """Runs the scenarios of LightUNETRTrainingLib.scenarios (also run by pytest on slicer-core)."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        import tempfile

        self.tmpdir = tempfile.mkdtemp(prefix="LightUNETRTrainingTest-")

    def tearDown(self):
        import shutil

        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def runTest(self):
        self.setUp()
        self.test_case_table_and_export()
        self.setUp()
        self.test_training()
        self.tearDown()

    def _logic(self):
        from LightUNETRSegmentationLib.logic import SegmentationLogic
        from LightUNETRTrainingLib.logic import TrainingLogic

        seg = SegmentationLogic(modelsFolder=os.path.join(self.tmpdir, "models"))
        return TrainingLogic(segmentationLogic=seg, jobsFolder=os.path.join(self.tmpdir, "jobs"))

    def test_case_table_and_export(self):
        from LightUNETRTrainingLib import scenarios

        self.delayDisplay("Case table from the scene")
        scenarios.case_table_scenario()
        slicer.mrmlScene.Clear()
        self.delayDisplay("Export matches the scene voxel by voxel")
        scenarios.export_check_scenario(os.path.join(self.tmpdir, "export"))
        slicer.mrmlScene.Clear()
        self.delayDisplay("Invalid setups are reported per case")
        logic = self._logic()
        scenarios.invalid_setups_scenario(logic, os.path.join(self.tmpdir, "invalid"))
        logic.shutdown()
        self.delayDisplay("Case table and export tests passed")

    def test_training(self):
        from LightUNETRSegmentationLib import environment
        from LightUNETRTrainingLib import scenarios
        from LightUNETRTrainingLib.config import TrainingConfig

        if environment.missing_dependencies():
            self.delayDisplay(f"torch/MONAI not installed: skipping the training test ({environment.missing_dependencies()})")
            return
        logic = self._logic()
        config = TrainingConfig(name="Tiny", iterations=4, patch_size=(32, 32, 32), batch_labeled=2, batch_unlabeled=2,
                                val_every=0, device="cpu", inference_device="cpu", threads=1,
                                target_spacing=(0.7, 0.9, 2.5), rank_uncertainty=True)
        self.delayDisplay("Real short training: stop, resume, register, segment the unlabelled cases")
        try:
            scenarios.training_run_scenario(logic, os.path.join(self.tmpdir, "job"), config)
        finally:
            logic.shutdown()
        logging.info("LightUNETRTraining: training test passed")
        self.delayDisplay("Training test passed")
