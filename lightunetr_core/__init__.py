"""lightunetr_core: Light-UNETR networks, CSE semi-supervised training, inference and model bundles.

This package never imports slicer, qt or vtk; the Slicer modules drive it through its command line
and job protocol (see :mod:`lightunetr_core.jobs`).
"""

__version__ = "0.1.0"
