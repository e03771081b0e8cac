"""Hidden module that registers the "Light-UNETR" Segment Editor effect at start-up."""

import os

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest


class SegmentEditorLightUNETR(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SegmentEditorLightUNETR"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "LightUNETRSegmentation"]
        self.parent.contributors = ["LightUNETR developers"]
        self.parent.hidden = True
        self.parent.helpText = "Registers the Light-UNETR effect in the Segment Editor."
        self.parent.acknowledgementText = ""
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as qSlicerSegmentationsEditorEffects

        instance = qSlicerSegmentationsEditorEffects.qSlicerSegmentEditorScriptedEffect(None)
        effectFilename = os.path.join(os.path.dirname(__file__), self.__class__.__name__ + "Lib/SegmentEditorEffect.py")
        instance.setPythonSource(effectFilename.replace("\\", "/"))
        instance.self().register()


class SegmentEditorLightUNETRTest(ScriptedLoadableModuleTest):
    """Headless effect test in a real Slicer: mapping and mask-respecting apply (shared with pytest)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_effect_registered()
        self.setUp()
        self.test_apply_scenario()

    def test_effect_registered(self):
        w = slicer.qMRMLSegmentEditorWidget()
        w.setMRMLScene(slicer.mrmlScene)
        n = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        w.setMRMLSegmentEditorNode(n)
        w.setActiveEffectByName("Light-UNETR")
        self.assertIsNotNone(w.activeEffect(), "Light-UNETR effect is not registered")
        w.setActiveEffect(None)
        self.delayDisplay("Effect registered")

    def test_apply_scenario(self):
        from SegmentEditorLightUNETRLib import effectscenarios

        effectscenarios.apply_respects_mask_scenario()
        self.delayDisplay("Apply respects the editable area")
