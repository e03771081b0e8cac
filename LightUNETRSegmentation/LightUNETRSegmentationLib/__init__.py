"""Qt-free logic of the LightUNETRSegmentation module.

Everything here uses only MRML classes, module logics and ``slicer.util`` functions that exist both
in a real Slicer (>= 5.10) and in the PyPI ``slicer-core`` wheel, so it is tested with pytest against a
real MRML scene. Nothing here imports torch, MONAI, qt or ``slicer.app`` at import time; the
inference engine (``lightunetr_core``) runs in a separate process (see :mod:`.jobrunner`).

Sub-modules:

``volumeio``    volume export through storage nodes, ROI crop, labelmap/uncertainty file import
``segments``    label specs (names, colours, terminology) and result import into a segmentation node
``jobrunner``   generic background job runner: subprocess + JSON events + process-tree cancel (reused by
                LightUNETRTraining)
``models``      model bundles discovery in a models folder, add model from file
``environment`` dependency checks (first use only) and the environment report
``logic``       ``SegmentationLogic.process`` / ``processAsync`` / ``SegmentationQueue``
``scenarios``   test scenarios shared by pytest and the Slicer self-test
"""
