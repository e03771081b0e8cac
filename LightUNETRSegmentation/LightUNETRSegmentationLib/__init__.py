"""Logic of the LightUNETRSegmentation module and of the "Light-UNETR" Segment Editor effect.

Qt-free sub-modules (tested with pytest on a real MRML scene from slicer-core; the engine runs in a separate
process through ``lightunetr_core.jobs.runner``):

``logic``          ``SegmentationLogic.process`` / ``processAsync`` / ``SegmentationQueue``, ``shared_logic``
``effectlogic``    the effect's preview session and its Apply through the segment editor's modify API

Slicer-only (Qt): ``modeldialogs`` ("Download...", "Add model...", install progress), and the effect class in
``../SegmentEditorLightUNETRLib/`` (a folder of its own: Slicer loads an effect file as a module named after its
folder, which must not be a package that other code imports).

What the Training module shares with this one (volume I/O, segment import, the model library, the environment
check, parameter binding) is in ``../LightUNETRSlicerLib/``.
"""
