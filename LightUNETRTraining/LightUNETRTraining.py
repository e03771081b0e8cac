"""LightUNETRTraining: train or fine-tune Light-UNETR models (CSE semi-supervised) from the cases loaded in
Slicer.

Thin Slicer module: the widget wires the .ui to :mod:`LightUNETRTrainingLib.logic`, which is Qt-free and
tested with pytest against a real MRML scene (slicer-core). Every Slicer/Qt/CTK call here was looked up in
Slicer's source at v5.10.0 and v5.12.x (docs/slicer.md, "API audit"); Testing/pytest/test_slicer_contracts.py checks
the rules that can be checked without Slicer. The self-test at the bottom runs the shared scenarios
(:mod:`LightUNETRScenarios.training`) inside a real Slicer.
"""

import logging
import os
from typing import Annotated

import qt
import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LightUNETRSlicerLib import DOCUMENTATION_URL, generated, parameters
from LightUNETRTrainingLib import cases, startfrom
from LightUNETRTrainingLib.config import (ARCHITECTURES, MODALITIES, RANGES, RECIPES, TrainingConfig, parse_patch_size,
                                          parse_spacing)

_DEFAULTS = TrainingConfig()


class LightUNETRTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Light-UNETR Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy", "Plots", "LightUNETRSegmentation"]
        self.parent.contributors = ["LightUNETR developers"]
        self.parent.helpText = (
            "Train or fine-tune a Light-UNETR model on the volumes and segmentations loaded in Slicer, with CSE "
            "semi-supervised learning (unlabelled volumes help) or supervised only. Each volume is a case: labelled "
            "(with its segmentation; segment names are the classes), unlabelled, validation or ignored. AI "
            "segmentations stay unlabelled until you reviewed them. Training runs in a background process with live "
            "loss/Dice curves; Stop writes a checkpoint and Resume continues. The new model appears in the model "
            "list of Light-UNETR Segmentation and of the Segment Editor effect, and segments the unlabelled cases."
            f'<p>Documentation: <a href="{DOCUMENTATION_URL}">{DOCUMENTATION_URL}</a></p>'
        )
        self.parent.acknowledgementText = (
            "Light-UNETR and CSE: Liu et al., Harnessing Lightweight Transformer with Contextual Synergic "
            "Enhancement for Efficient 3D Medical Image Segmentation. Extension by the LightUNETR developers."
        )


@parameterNodeWrapper
class LightUNETRTrainingParameterNode:
    """The training settings, saved with the scene (defaults: :class:`TrainingConfig`)."""

    modelName: str = _DEFAULTS.name
    recipe: Annotated[str, Choice(list(RECIPES))] = _DEFAULTS.recipe
    architecture: Annotated[str, Choice(list(ARCHITECTURES))] = _DEFAULTS.architecture
    iterations: Annotated[int, WithinRange(*RANGES["iterations"])] = _DEFAULTS.iterations
    patchSize: str = ",".join(str(p) for p in _DEFAULTS.patch_size)
    targetSpacing: str = ""  # "" = the median spacing of the labelled cases
    # The "Start from" combo box is filled from the model library and the catalog (items change), so it is
    # not bound: the widget keeps it and this field in step, like the Segmentation module's model list.
    startFrom: str = startfrom.RANDOM
    batchLabeled: Annotated[int, WithinRange(*RANGES["batch_labeled"])] = _DEFAULTS.batch_labeled
    batchUnlabeled: Annotated[int, WithinRange(*RANGES["batch_unlabeled"])] = _DEFAULTS.batch_unlabeled
    valEvery: Annotated[int, WithinRange(*RANGES["val_every"])] = _DEFAULTS.val_every
    modality: Annotated[str, Choice(list(MODALITIES))] = _DEFAULTS.modality
    device: Annotated[str, Choice(list(parameters.DEVICES))] = parameters.DEFAULT_DEVICE
    segmentUnlabeled: bool = _DEFAULTS.segment_unlabeled
    rankUncertainty: bool = _DEFAULTS.rank_uncertainty
    keepCaseData: bool = _DEFAULTS.keep_case_data


ROLE_ITEMS = list(cases.ROLES)
COL_VOLUME, COL_SEGMENTATION, COL_ROLE, COL_REVIEW, COL_PROBLEMS = range(5)
#: Subject-hierarchy levels that can hold cases (vtkMRMLSubjectHierarchyConstants: Folder, Patient, Study).
CASE_FOLDER_LEVELS = ["Folder", "Patient", "Study"]


class LightUNETRTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.table = None
        self._job = None
        self._timer = None
        self._installer = None
        self._shownLog = 0
        self._binding = None  # parameters.GuiBinding of the parameter node and self.ui
        self._plotShownFor = None
        self._defaultToolTips = None  # of the widgets a starting model locks
        self._freeValues = None  # the form values a starting model replaced

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LightUNETRTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._binding = parameters.GuiBinding(self.ui)
        # Shows the noneDisplay text ("Whole scene") instead of "Select subject hierarchy item", which
        # qMRMLSubjectHierarchyComboBox sets at construction (qMRMLSubjectHierarchyComboBox.cxx, both tags).
        self.ui.folderComboBox.clearSelection()
        self.logic = LightUNETRTrainingLogic()

        from LightUNETRSlicerLib.dependencydialog import DependencyInstaller

        self._installer = DependencyInstaller(slicer.util.mainWindow())
        # Only folders, patients and studies can be "Cases from" (qMRMLSortFilterSubjectHierarchyProxyModel).
        self.ui.folderComboBox.sortFilterProxyModel().levelFilter = CASE_FOLDER_LEVELS
        self.ui.caseTableWidget.setColumnCount(5)
        self.ui.caseTableWidget.setHorizontalHeaderLabels(["Volume", "Segmentation", "Role", "Review", "Problems"])
        self.ui.caseTableWidget.horizontalHeader().setStretchLastSection(True)

        self.ui.refreshCasesButton.connect("clicked(bool)", lambda checked: self.refreshCases())
        self.ui.folderComboBox.connect("currentItemChanged(vtkIdType)", lambda item: self.refreshCases())
        self.ui.markReviewedButton.connect("clicked(bool)", self.onMarkReviewed)
        self.ui.checkButton.connect("clicked(bool)", self.onCheck)
        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.ui.openRunButton.connect("clicked(bool)", self.onOpenRun)
        self.ui.startFromComboBox.connect("currentIndexChanged(int)", self.onStartFromChanged)
        self.logic.segmentationLogic.library.add_listener(self.refreshStartFrom)  # downloads, trainings, "Add model..."

        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self.onTimer)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.initializeParameterNode()
        self.refreshCases()
        self.updateButtons()
        stopped = [r for r in self.logic.runs() if r["resumable"]]
        if stopped:
            self.setStatus(f"{len(stopped)} stopped run(s) in {self.logic.jobsFolder} (latest: {stopped[0]['name']}); "
                           "'Open run...' resumes one.")

    def cleanup(self):
        self.setParameterNode(None)
        self.removeObservers()
        if self.logic:
            self.logic.segmentationLogic.library.remove_listener(self.refreshStartFrom)
        if self._timer:
            self._timer.stop()
        if self._installer:
            self._installer.cleanup()
        if self.logic:
            self.logic.shutdown()

    @property
    def _parameterNode(self):
        return self._binding.node if self._binding else None

    def enter(self):
        self.initializeParameterNode()
        self.refreshCases()

    # exit(): the GUI stays bound to the node (parameters.GuiBinding says why).

    def onSceneStartClose(self, caller, event):
        # The logic detached the running job (it stops and writes its checkpoint without blocking Slicer).
        self.setParameterNode(None)
        self.table = None

    def onSceneEndClose(self, caller, event):
        if self._timer.isActive():  # a job detached by the close reports its end once, through the timer
            self.onTimer()
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.refreshCases()

    def onSceneEndImport(self, caller, event):
        # A loaded scene's values were copied into the module's singleton node, unchecked (as
        # SegmentEditor.py does, re-select and re-check the node after an import).
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.refreshCases()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self):
        raw = self.logic.getParameterNode()
        # Reuse the wrapper of the same node (Slicer 5.10's disconnectGui leaves the wrapper's observer).
        node = self._parameterNode if self._parameterNode and self._parameterNode.parameterNode is raw else \
            LightUNETRTrainingParameterNode(raw)
        # A value this machine or version does not offer (a scene from elsewhere) would make the combo-box
        # connector raise, leaving every widget unbound.
        node.device = parameters.valid_choice(node.device, parameters.DEVICES, parameters.DEFAULT_DEVICE)
        node.recipe = parameters.valid_choice(node.recipe, RECIPES, _DEFAULTS.recipe)
        node.architecture = parameters.valid_choice(node.architecture, ARCHITECTURES, _DEFAULTS.architecture)
        node.modality = parameters.valid_choice(node.modality, MODALITIES, _DEFAULTS.modality)
        self.setParameterNode(node)

    def setParameterNode(self, node):
        if self._binding is None:  # setup() did not get that far
            return
        if self._binding.bind(node):
            self._freeValues = None  # the values a starting model replaced belong to the previous node
        if node is not None:
            self.refreshStartFrom()

    # ------------------------------------------------------------------ start from
    def refreshStartFrom(self):
        """Fill "Start from" (random, library models, catalog models to download) and show the node's choice."""
        combo = self.ui.startFromComboBox
        library = self.logic.segmentationLogic.library
        current = startfrom.resolve(self._parameterNode.startFrom if self._parameterNode else (combo.currentData or ""),
                                    library)  # a catalog model downloaded meanwhile is now a library model
        wasBlocked = combo.blockSignals(True)
        try:
            combo.clear()
            for text, value, tip in startfrom.choices(library):
                combo.addItem(text, value)
                combo.setItemData(combo.count - 1, tip, qt.Qt.ToolTipRole)
            index = combo.findData(current)
            combo.currentIndex = index if index >= 0 else 0
        finally:
            combo.blockSignals(wasBlocked)
        if self._parameterNode and (combo.currentData or "") != self._parameterNode.startFrom:
            # downloaded meanwhile: its library path; removed from the library: random weights
            self._parameterNode.startFrom = combo.currentData or ""
        self._applyStartFrom()

    def onStartFromChanged(self, index):
        if self._parameterNode:
            self._parameterNode.startFrom = self.ui.startFromComboBox.currentData or ""
        self._applyStartFrom()

    def _applyStartFrom(self):
        """A starting model fixes architecture, patch size, spacing and normalisation: set and lock them."""
        p = self._parameterNode
        try:
            card = startfrom.card_for(p.startFrom) if p else None
        except ValueError as exc:
            card = None
            self.setStatus(str(exc))
        values = startfrom.form_values(card)
        if p and values:
            if self._freeValues is None:  # what the user had set, restored on "Random initialisation"
                self._freeValues = {k: getattr(p, k) for k in values}
            for key, value in values.items():
                setattr(p, key, value)
        elif p and self._freeValues is not None:
            for key, value in self._freeValues.items():
                setattr(p, key, value)
            self._freeValues = None
        locked = bool(values)
        widgets = [self.ui.architectureComboBox, self.ui.patchSizeLineEdit, self.ui.targetSpacingLineEdit,
                   self.ui.modalityComboBox]
        if self._defaultToolTips is None:
            self._defaultToolTips = [w.toolTip for w in widgets]
        for widget, default in zip(widgets, self._defaultToolTips):
            widget.enabled = not locked
            widget.toolTip = f"Set by the starting model '{card.get('name')}'" if locked else default
        self.ui.targetSpacingLineEdit.placeholderText = "its own spacing" if locked else "median of the labelled cases"

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
            review = row.review
            w.setItem(n, COL_REVIEW, qt.QTableWidgetItem("" if review == generated.NOT_GENERATED else review))
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

    def onMarkReviewed(self):
        rows = sorted({index.row() for index in self.ui.caseTableWidget.selectionModel().selectedRows()})
        marked = 0
        for n in rows:
            row = self.table.rows[n]
            if row.segmentation is not None and row.review != generated.NOT_GENERATED:
                generated.mark_reviewed(row.segmentation)
                marked += 1
        self.setStatus(f"{marked} AI segmentation(s) marked as reviewed." if marked else
                       "Select the rows of AI segmentations you checked, then click 'Mark reviewed'.")
        self.refreshCases()

    def config(self):
        p = self._parameterNode
        return TrainingConfig(
            name=p.modelName.strip(),
            recipe=p.recipe,
            architecture=p.architecture,
            iterations=p.iterations,
            patch_size=parse_patch_size(p.patchSize),
            batch_labeled=p.batchLabeled,
            batch_unlabeled=p.batchUnlabeled,
            val_every=p.valEvery,
            device=p.device,
            inference_device=p.device,
            modality=p.modality,
            init_bundle=p.startFrom or None,
            target_spacing=None if p.startFrom else parse_spacing(p.targetSpacing),
            segment_unlabeled=p.segmentUnlabeled,
            rank_uncertainty=p.rankUncertainty,
            keep_case_data=p.keepCaseData,
        )

    def onCheck(self):
        ok = self.table.check(self.config())
        self._fillTable()
        self.setStatus("Ready to train." if ok else "Fix these first:\n" + "\n".join(self.table.problems)
                       + ("\n(see the Problems column)" if any(r.problems for r in self.table.rows) else ""))
        return ok

    # ------------------------------------------------------------------ run
    def onStart(self):
        if not self._installer.ensure(onReady=self.onStart):
            return
        if not self.onCheck():
            return
        self.ui.logTextEdit.clear()
        self._shownLog = 0
        self._job = self.logic.start(self.table, self.config())
        self._monitor()

    def onStop(self):
        if self._job is not None:
            self._job.stop()
            self.setStatus("Stopping (writing a checkpoint)...")

    def onResume(self):
        if self._job is not None and self._job.canResume:
            self._shownLog = len(self._job.log)
            with slicer.util.tryWithErrorDisplay("Could not resume the training.", waitCursor=False):
                self._job.resume()
            self._monitor()

    def onOpenRun(self):
        from LightUNETRTrainingLib.logic import RunFolderError

        if self._job is not None and not self._job.done:
            slicer.util.errorDisplay("A training is running; stop it before opening another run.")
            return
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Open a training run folder",
                                                     self.logic.jobsFolder)
        if not folder:
            return
        try:
            self._job = self.logic.openRun(folder)
        except RunFolderError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="Open run")
            return
        self.ui.logTextEdit.clear()
        self._shownLog = 0
        self.setStatus(self._job.message)
        self.updateButtons()

    def _monitor(self):
        if self._job.done:
            self.onFinished()
            return
        self._timer.start()
        self.updateButtons()

    def onTimer(self):
        job = self._job
        still_any = self.logic.poll()  # also detached jobs of a closed scene, until their process is gone
        if job is None:
            if not still_any:
                self._timer.stop()
            return
        if job.plot is not None and self._plotShownFor is not job:
            slicer.modules.plots.logic().ShowChartInLayout(job.plot.chart)
            self._plotShownFor = job
        self.updateProgress()
        if job.done:
            self.onFinished()
            if not still_any:
                self._timer.stop()

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
        job = self._job
        self.updateProgress()
        self.setStatus(job.message)
        if job.ranking:
            self.ui.logTextEdit.appendPlainText("Unlabelled cases to review first (mean uncertainty near the predicted "
                                                "structures; predicted volume):")
            for r in job.ranking:
                score = r["reviewScore"] if r.get("reviewScore") is not None else r["meanUncertainty"]
                volume = (r.get("review") or {}).get("foreground_ml")
                self.ui.logTextEdit.appendPlainText(f"  {r['volume'].GetName()}: {score:.4f}"
                                                    + (f"; {volume:.1f} ml" if volume is not None else ""))
        if job.status == "failed":
            slicer.util.errorDisplay(job.message, detailedText="\n".join(job.log[-40:]))
        if not job.detached:
            self.refreshCases()
        self.updateButtons()

    def setStatus(self, text):
        self.ui.statusLabel.text = text

    def updateButtons(self):
        job = self._job
        running = job is not None and not job.done
        self.ui.startButton.enabled = not running
        self.ui.stopButton.enabled = running
        self.ui.resumeButton.enabled = job is not None and job.canResume
        self.ui.openRunButton.enabled = not running


class LightUNETRTrainingLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer wrapper of :class:`LightUNETRTrainingLib.logic.TrainingLogic` (all behaviour is there),
    on the session's shared segmentation logic (model library and queue)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from LightUNETRSegmentationLib.logic import shared_logic
        from LightUNETRTrainingLib.logic import TrainingLogic

        segmentationLogic = shared_logic(modelsFolder=qt.QSettings().value(parameters.MODELS_FOLDER_SETTING) or None)
        folder = qt.QSettings().value("LightUNETR/TrainingFolder") or None
        self.core = TrainingLogic(segmentationLogic=segmentationLogic, jobsFolder=folder)

    def __getattr__(self, name):  # forward the console API (setup, start, run, caseTable, ...)
        core = self.__dict__.get("core")
        if core is None:
            raise AttributeError(name)
        return getattr(core, name)


class LightUNETRTrainingTest(ScriptedLoadableModuleTest):
    """Runs in a real Slicer: the first-launch state of the widget and the scenarios of
    LightUNETRScenarios.training (also run by pytest on slicer-core); the training run only when torch
    and MONAI are installed in Slicer's Python."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        # Slicer's "Reload and Test" calls runTest() alone (ScriptedLoadableModule.py: testCase.runTest()),
        # ctest through unittest (setUp, runTest, tearDown): each test gets its own scene and temporary
        # folder here, removed whatever happens.
        import shutil
        import tempfile

        for test in (self.test_first_launch, self.test_case_table_and_export, self.test_training,
                     self.test_resume_after_restart):
            self.setUp()
            self.tmpdir = tempfile.mkdtemp(prefix="LightUNETRTrainingTest-")
            try:
                test()
            finally:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _logic(self):
        from LightUNETRSegmentationLib.logic import SegmentationLogic
        from LightUNETRTrainingLib.logic import TrainingLogic

        seg = SegmentationLogic(modelsFolder=os.path.join(self.tmpdir, "models"))
        return TrainingLogic(segmentationLogic=seg, jobsFolder=os.path.join(self.tmpdir, "jobs"))

    def test_first_launch(self):
        """The parameter node is bound to the GUI (connectGui did not raise) and the widgets show its values."""
        slicer.util.selectModule("LightUNETRTraining")
        widget = slicer.modules.lightunetrtraining.widgetRepresentation().self()
        self.assertTrue(widget._binding.connected, "the parameter node is not connected to the GUI")
        self.assertEqual(widget.ui.recipeComboBox.currentText, widget._parameterNode.recipe)
        self.assertEqual([widget.ui.deviceComboBox.itemText(i) for i in range(widget.ui.deviceComboBox.count)],
                         list(parameters.DEVICES))
        self.assertEqual((widget.ui.iterationsSpinBox.minimum, widget.ui.iterationsSpinBox.maximum), RANGES["iterations"])
        widget.ui.iterationsSpinBox.value = 123
        self.assertEqual(widget.config().iterations, 123)
        self.assertEqual(list(widget.ui.folderComboBox.sortFilterProxyModel().levelFilter), CASE_FOLDER_LEVELS)
        combo = widget.ui.startFromComboBox
        values = [combo.itemData(i) for i in range(combo.count)]
        self.assertEqual(values[0], "", "'Start from' must offer random initialisation first")
        self.assertTrue(any(str(v).startswith("catalog:") or os.path.isdir(str(v)) for v in values[1:]),
                        "'Start from' offers neither library nor catalog models")
        catalog = next(i for i, v in enumerate(values) if str(v).startswith("catalog:") or os.path.isdir(str(v)))
        combo.currentIndex = catalog
        self.assertEqual(widget._parameterNode.startFrom, values[catalog])
        self.assertFalse(widget.ui.patchSizeLineEdit.enabled, "a starting model fixes the patch size")
        self.assertEqual(widget.config().init_bundle, values[catalog])
        combo.currentIndex = 0
        self.assertTrue(widget.ui.patchSizeLineEdit.enabled)
        # Choices other than the first survive leaving and re-entering the module (a binding left live by a
        # falsy connectGui tag 0 wrote the first choice back into the node).
        chosen = {"recipeComboBox": "supervised", "deviceComboBox": "cpu", "modalityComboBox": "CT"}
        for name, text in chosen.items():
            getattr(widget.ui, name).currentIndex = getattr(widget.ui, name).findText(text)
        slicer.util.selectModule("Data")
        slicer.util.selectModule("LightUNETRTraining")
        for name, text in chosen.items():
            self.assertEqual(getattr(widget.ui, name).currentText, text, f"{name} lost its value on re-entering")
        self.assertEqual((widget._parameterNode.recipe, widget._parameterNode.device, widget._parameterNode.modality),
                         ("supervised", "cpu", "CT"))
        self.delayDisplay("First launch: GUI bound to the parameter node")

    def test_case_table_and_export(self):
        from LightUNETRScenarios import training as scenarios

        self.delayDisplay("Case table from the scene")
        scenarios.case_table_scenario()
        slicer.mrmlScene.Clear(0)
        self.delayDisplay("AI results need review before they are labelled cases")
        scenarios.review_scenario()
        slicer.mrmlScene.Clear(0)
        self.delayDisplay("Export matches the scene voxel by voxel")
        scenarios.export_check_scenario(os.path.join(self.tmpdir, "export"))
        slicer.mrmlScene.Clear(0)
        self.delayDisplay("Invalid setups are reported per case")
        logic = self._logic()
        scenarios.invalid_setups_scenario(logic, os.path.join(self.tmpdir, "invalid"))
        logic.shutdown()

    def test_training(self):
        from LightUNETRSlicerLib import environment
        from LightUNETRScenarios import training as scenarios

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

    def test_resume_after_restart(self):
        from LightUNETRSlicerLib import environment
        from LightUNETRScenarios import training as scenarios
        from LightUNETRTrainingLib.logic import TrainingLogic

        if environment.missing_dependencies():
            self.delayDisplay("torch/MONAI not installed: skipping the resume-after-restart test")
            return
        logic = self._logic()
        fresh = TrainingLogic(segmentationLogic=logic.segmentationLogic, jobsFolder=logic.jobsFolder)
        config = TrainingConfig(name="Again", iterations=3, patch_size=(32, 32, 32), batch_labeled=2, batch_unlabeled=2,
                                val_every=1, device="cpu", threads=1, plot=False, segment_unlabeled=False)
        self.delayDisplay("Stop a run, open it in a new logic (as after a restart), resume it to the end")
        try:
            scenarios.reopen_scenario(logic, fresh, os.path.join(self.tmpdir, "jobs", "Again-1"), config)
        finally:
            fresh.shutdown()
            logic.shutdown()
