"""Test scenarios, not production code: what the Slicer self-tests (``ScriptedLoadableModuleTest`` in the
module files and ``Testing/Python``) and the pytest suite on slicer-core's real MRML scene (``Testing/pytest``)
both run, so the two check the same thing.

``segmentation``  volumes on tricky grids (left-handed, oblique, anisotropic), a tiny bundle, end-to-end
                  segmentation, queue, cancel, bad inputs, model library and zipped bundles
``effect``        the Segment Editor effect: preview sessions and Apply through the editor's modify API
``training``      a training scene, export, a real short run with stop / resume / reopen, start-from

Installed beside the scripted modules by ``LightUNETRSegmentation/CMakeLists.txt`` so that the self-tests can
import it inside Slicer; the modules' own code never imports it.
"""
