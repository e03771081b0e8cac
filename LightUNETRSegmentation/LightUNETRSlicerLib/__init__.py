"""The Slicer-side library both LightUNETR modules import (LightUNETRSegmentation and LightUNETRTraining, and the
Segment Editor effect): what is Slicer-specific but belongs to neither module alone.

Installed beside the scripted modules by ``LightUNETRSegmentation/CMakeLists.txt`` (Slicer puts that folder on
``sys.path``), so it is imported as a package of its own: ``from LightUNETRSlicerLib import volumeio``. The
Training module depends on the Segmentation module (``parent.dependencies``), which installs it.

Qt-free sub-modules (MRML classes, module logics and ``slicer.util`` functions that exist both in a real
Slicer >= 5.10 and in the PyPI ``slicer-core`` wheel; tested with pytest on a real MRML scene; nothing
imports torch, MONAI, qt or ``slicer.app`` at import time):

``environment``    dependency checks, background pip install with constraints, environment report
``volumeio``       volume export through storage nodes, ROI / box crop, result file import
``segments``       label specs (names, colours, terminology) and result import into a segmentation node
``generated``      marks on the nodes and segments LightUNETR creates; review state of AI segmentations
``parameters``     device choices, ranges, the parameter-node GUI binding, which model the node holds
``models``         the model library (bundles in a models folder, zipped bundles), shared, with change listeners
``modelinstall``   the catalog, the model card shown before adding, download / ``.pth`` conversion jobs

Slicer-only (Qt): ``dependencydialog`` (the dialog that installs torch and MONAI).

Background processes (segment, train, downloads, pip) run through ``lightunetr_core.jobs.runner``, which also
finds ``PythonSlicer``.
"""

#: Where a user reads the extension's documentation (the extension's homepage, CMakeLists.txt
#: EXTENSION_HOMEPAGE, followed by the Slicer page of the docs).
DOCUMENTATION_URL = "https://github.com/lightunetr/SlicerLightUNETR/blob/main/docs/slicer.md"
