"""Slicer self-test of what crosses the LightUNETR modules (run in a real Slicer 5.10 / 5.12 by CTest:
Testing/Python/CMakeLists.txt; or paste into Slicer's Python console:
``import LightUNETRWorkflowTest, unittest; unittest.main(module=LightUNETRWorkflowTest, exit=False)``).

- one model library: a model registered by Training (or added in a script) appears at once in the
  Segmentation module's list;
- generated nodes: an uncertainty map is never an input volume or a training case, an AI segmentation is an
  unlabelled training case until reviewed;
- closing the scene while a training runs does not freeze Slicer and the run can be resumed.
"""

import os
import shutil
import tempfile
import time

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class LightUNETRWorkflowTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        # Slicer's "Reload and Test" calls runTest() alone (ScriptedLoadableModule.py: testCase.runTest()),
        # ctest through unittest (setUp, runTest, tearDown): each test gets its own scene and temporary
        # folder here, removed whatever happens.
        for test in (self.test_generated_nodes_are_not_inputs, self.test_one_model_library,
                     self.test_scene_close_during_training):
            self.setUp()
            self.tmpdir = tempfile.mkdtemp(prefix="LightUNETRWorkflowTest-")
            try:
                test()
            finally:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    @staticmethod
    def _missing():
        from LightUNETRSlicerLib import environment

        return environment.missing_dependencies()

    def test_generated_nodes_are_not_inputs(self):
        from LightUNETRSlicerLib import generated
        from LightUNETRScenarios import segmentation as scenarios
        from LightUNETRSegmentationLib.logic import shared_logic
        from LightUNETRTrainingLib.cases import CaseTable

        volume = scenarios.add_volume("patient", scenarios.test_pattern().astype(np.float32), "oblique")
        uncertainty = scenarios.add_volume("patient uncertainty", scenarios.test_pattern().astype(np.float32), "oblique")
        generated.mark_generated(uncertainty, "MyModel", "uncertainty")
        self.assertEqual(shared_logic().inputVolumes(), [volume])
        self.assertEqual([r.volume for r in CaseTable.from_scene().rows], [volume])
        from LightUNETRScenarios import training as training_scenarios

        slicer.mrmlScene.Clear(0)
        training_scenarios.review_scenario()
        self.delayDisplay("Generated nodes are marked and kept out of the inputs")

    def test_one_model_library(self):
        if self._missing():
            self.delayDisplay(f"torch/MONAI not installed in Slicer's Python: skipped ({self._missing()})")
            return
        from LightUNETRScenarios import segmentation as scenarios
        from LightUNETRSegmentationLib.logic import shared_logic

        slicer.util.selectModule("LightUNETRSegmentation")
        widget = slicer.modules.lightunetrsegmentation.widgetRepresentation().self()
        training = slicer.util.getModuleLogic("LightUNETRTraining")
        library = shared_logic().library
        self.assertIs(training.segmentationLogic.library, library)
        old = library.folder
        try:
            library.set_folder(os.path.join(self.tmpdir, "models"))
            bundle = scenarios.make_tiny_bundle(os.path.join(self.tmpdir, "made"), name="FromTraining")
            training.segmentationLogic.addModelFromFile(bundle)  # what a finished training does
            names = [widget.ui.modelComboBox.itemText(i) for i in range(widget.ui.modelComboBox.count)]
            self.assertIn("FromTraining", names)
        finally:
            library.set_folder(old)
        self.delayDisplay("A registered model appears in the Segmentation module at once")

    def test_scene_close_during_training(self):
        if self._missing():
            self.delayDisplay(f"torch/MONAI not installed in Slicer's Python: skipped ({self._missing()})")
            return
        from LightUNETRSegmentationLib.logic import SegmentationLogic
        from LightUNETRScenarios import training as scenarios
        from LightUNETRTrainingLib.config import TrainingConfig
        from LightUNETRTrainingLib.logic import TrainingLogic

        logic = TrainingLogic(segmentationLogic=SegmentationLogic(modelsFolder=os.path.join(self.tmpdir, "models")),
                              jobsFolder=os.path.join(self.tmpdir, "jobs"))
        try:
            scenarios.training_scene(n_labeled=2, n_unlabeled=2)
            config = TrainingConfig(name="CloseTest", iterations=400, patch_size=(32, 32, 32), val_every=0,
                                    device="cpu", inference_device="cpu", threads=1, target_spacing=(0.7, 0.9, 2.5))
            job = logic.start(logic.caseTable(), config, jobFolder=os.path.join(self.tmpdir, "job"))
            deadline = time.time() + 600
            while job.poll() and job.iteration < 1 and time.time() < deadline:
                slicer.app.processEvents()
                time.sleep(0.05)
            t0 = time.time()
            slicer.mrmlScene.Clear(0)
            self.assertLess(time.time() - t0, 5.0, "closing the scene waited for the training process")
            self.assertTrue(job.detached)
            while job.poll() and time.time() < deadline:
                time.sleep(0.05)
            self.assertEqual(job.status, "stopped", job.message)
            self.assertTrue(job.resumable)
        finally:
            logic.shutdown()
        self.delayDisplay("Scene close during training: no freeze, checkpoint kept")
