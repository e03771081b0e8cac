"""Logic of the LightUNETRSegmentation module and of the "Light-UNETR" Segment Editor effect.

Qt-free sub-modules (MRML classes, module logics and ``slicer.util`` functions that exist both in a real
Slicer >= 5.10 and in the PyPI ``slicer-core`` wheel; tested with pytest on a real MRML scene; nothing
imports torch, MONAI, qt or ``slicer.app`` at import time, the engine runs in a separate process):

``logic``          ``SegmentationLogic.process`` / ``processAsync`` / ``SegmentationQueue``, ``shared_logic``
``parameters``     device choices, ranges, which model the parameter node holds
``models``         the model library (bundles in a models folder, zipped bundles), shared, with change listeners
``modelinstall``   the catalog, the model card shown before adding, download / ``.pth`` conversion jobs
``generated``      marks on the nodes and segments LightUNETR creates; review state of AI segmentations
``volumeio``       volume export through storage nodes, ROI / box crop, result file import
``segments``       label specs (names, colours, terminology) and result import into a segmentation node
``effectlogic``    the effect's preview session and its Apply through the segment editor's modify API
``environment``    dependency checks, background pip install with constraints, environment report
``scenarios``, ``effectscenarios``  scenarios shared by pytest and the Slicer self-test

Background jobs (segment, train, downloads, pip) run through ``lightunetr_core.jobs.runner`` (imported as
``jobrunner``): one runner, one event parser and one set of exit codes for both halves of the protocol.

Slicer-only (Qt): ``dependencydialog``, ``modeldialogs`` ("Download...", "Add model...", install progress), and the effect class in ``../SegmentEditorLightUNETRLib/`` (a folder of
its own: Slicer loads an effect file as a module named after its folder, which must not be a package that
other code imports).
"""

#: Where a user reads the extension's documentation (the extension's homepage, CMakeLists.txt
#: EXTENSION_HOMEPAGE, followed by the Slicer page of the docs).
DOCUMENTATION_URL = "https://github.com/lightunetr/SlicerLightUNETR/blob/main/docs/slicer.md"
