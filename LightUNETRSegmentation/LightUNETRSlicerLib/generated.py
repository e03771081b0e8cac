"""Nodes and segments that the LightUNETR modules create, marked as such, and the review state of AI
segmentations.

Every node a LightUNETR module adds to the scene (segmentations, uncertainty maps, previews, training
curves) carries the node attribute :data:`GENERATED_ATTRIBUTE` (value: the model name) and
:data:`KIND_ATTRIBUTE`; every segment a model wrote carries the segment tag :data:`GENERATED_TAG`. Node
attributes are saved with the scene (``.mrml``) and segment tags with the segmentation (``.seg.nrrd``),
so the marks survive a scene save and load. Generated *volumes* are never input cases ("Segment all
loaded volumes", the training case table), and a segmentation holding AI segments is never offered as a
labelled training case until each of those segments was reviewed.

Review uses Slicer's own segment status (``vtkSlicerSegmentationsModuleLogic::SegmentStatus``, the
status column of the Segment Editor's segment list, saved as the ``Segmentation.Status`` segment tag):
our imports leave every segment "not started"; the Segment Editor switches a segment it modifies to
"in progress" (``vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap``), and the user can set
"completed" or "flagged" in the segment list. An AI segment is reviewed once it is "in progress" or
"completed"; :func:`mark_reviewed` sets them all to "completed" (Training's "Mark reviewed" button).
"""

from __future__ import annotations

import slicer

GENERATED_ATTRIBUTE = "LightUNETR.Generated"
KIND_ATTRIBUTE = "LightUNETR.Kind"
GENERATED_TAG = "LightUNETR.Generated"
KINDS = ("segmentation", "uncertainty", "preview", "plot")

NEEDS_REVIEW, REVIEWED, FLAGGED, NOT_GENERATED = "needs review", "reviewed", "flagged", "not generated"


def mark_generated(node, model_name: str, kind: str) -> None:
    """Mark ``node`` as made by LightUNETR (``model_name`` may be empty for nodes not tied to a model)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    node.SetAttribute(GENERATED_ATTRIBUTE, str(model_name or "LightUNETR"))
    node.SetAttribute(KIND_ATTRIBUTE, kind)


def mark_generated_segment(segment, model_name: str) -> None:
    segment.SetTag(GENERATED_TAG, str(model_name or "LightUNETR"))


def is_generated(node) -> bool:
    return node is not None and bool(node.GetAttribute(GENERATED_ATTRIBUTE))


def generated_kind(node) -> str | None:
    return node.GetAttribute(KIND_ATTRIBUTE) if is_generated(node) else None


def is_input_volume(node) -> bool:
    """A scalar image volume the user loaded: not a label map, not hidden, not made by LightUNETR."""
    return (node is not None and node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
            and not node.GetHideFromEditors() and not is_generated(node))


def generated_segments(segmentationNode) -> list:
    """The segments of ``segmentationNode`` that a model wrote (``vtkSegment`` objects)."""
    seg = segmentationNode.GetSegmentation()
    out = []
    for i in range(seg.GetNumberOfSegments()):
        segment = seg.GetNthSegment(i)
        if segment.HasTag(GENERATED_TAG):
            out.append(segment)
    return out


def review_state(segmentationNode) -> str:
    """:data:`NOT_GENERATED` when no segment was written by a model; else :data:`FLAGGED` when an AI
    segment is flagged, :data:`NEEDS_REVIEW` while an AI segment is still "not started", and
    :data:`REVIEWED` when every AI segment was edited or completed."""
    ai = generated_segments(segmentationNode)
    if not ai:
        return NOT_GENERATED
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    statuses = [logic.GetSegmentStatus(s) for s in ai]
    if logic.Flagged in statuses:
        return FLAGGED
    if logic.NotStarted in statuses:
        return NEEDS_REVIEW
    return REVIEWED


def unreviewed_segment_names(segmentationNode) -> list[str]:
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    return [s.GetName() for s in generated_segments(segmentationNode)
            if logic.GetSegmentStatus(s) in (logic.NotStarted, logic.Flagged)]


def usable_as_label(segmentationNode) -> bool:
    """True for a segmentation that may be a labelled training case: the user's own, or reviewed AI output."""
    return review_state(segmentationNode) in (NOT_GENERATED, REVIEWED)


def mark_reviewed(segmentationNode) -> None:
    """Set every AI segment's status to "completed" (the user confirms having checked the result)."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    was_modifying = segmentationNode.StartModify()
    try:
        for segment in generated_segments(segmentationNode):
            logic.SetSegmentStatus(segment, logic.Completed)
    finally:
        segmentationNode.EndModify(was_modifying)
