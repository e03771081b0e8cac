"""Light-UNETR Segment Editor effect. ``effectlogic`` is Qt-free (pytest on slicer-core); the effect
classes need Slicer's SegmentEditorEffects and are only imported inside Slicer."""

try:
    from SegmentEditorEffects.AbstractScriptedSegmentEditorEffect import *  # noqa: F401,F403
    from SegmentEditorEffects.AbstractScriptedSegmentEditorLabelEffect import *  # noqa: F401,F403
except ImportError:  # slicer-core (tests): no Qt, no Segment Editor effects
    pass
else:
    from .SegmentEditorEffect import *  # noqa: F401,F403
