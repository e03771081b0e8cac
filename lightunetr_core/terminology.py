"""Segment terminology and colours: one table for the command line (``.seg.nrrd``, model cards written by
``train`` and ``import-reference``) and the Slicer modules. Standard library only (the Slicer modules import
it without torch).

A terminology entry is Slicer's serialised form
``context~category~type~typeModifier~regionContext~region~regionModifier`` with each code written
``scheme^value^meaning`` (Slicer's ``vtkSlicerTerminologiesModuleLogic`` and its ``.seg.nrrd``
``TerminologyEntry`` tag). Structures the Light-UNETR benchmarks segment (left atrium, pancreas, brain
tumour) and common organs get their SNOMED CT codes; any other label gets a private code
(``99LIGHTUNETR``) whose meaning is the label's name, so no two labels share an entry.
"""

from __future__ import annotations

import colorsys
import re

GENERAL_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
ALTERED_STRUCTURE = ("SCT", "49755003", "Morphologically Altered Structure")
PRIVATE_SCHEME = "99LIGHTUNETR"

_NEOPLASM = (ALTERED_STRUCTURE, ("SCT", "108369006", "Neoplasm"), (0.56, 0.93, 0.56))
#: normalised name → (category, type, colour 0..1)
KNOWN_STRUCTURES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str], tuple[float, float, float]]] = {
    "left atrium": (ANATOMICAL_STRUCTURE, ("SCT", "82471001", "Left atrium"), (0.81, 0.26, 0.26)),
    "pancreas": (ANATOMICAL_STRUCTURE, ("SCT", "15776009", "Pancreas"), (0.98, 0.78, 0.44)),
    "spleen": (ANATOMICAL_STRUCTURE, ("SCT", "78961009", "Spleen"), (0.62, 0.31, 0.34)),
    "liver": (ANATOMICAL_STRUCTURE, ("SCT", "10200004", "Liver"), (0.87, 0.51, 0.40)),
    "kidney": (ANATOMICAL_STRUCTURE, ("SCT", "64033007", "Kidney"), (0.72, 0.45, 0.38)),
    "left kidney": (ANATOMICAL_STRUCTURE, ("SCT", "18639004", "Left kidney"), (0.72, 0.45, 0.38)),
    "right kidney": (ANATOMICAL_STRUCTURE, ("SCT", "9846003", "Right kidney"), (0.72, 0.45, 0.38)),
    "lung": (ANATOMICAL_STRUCTURE, ("SCT", "39607008", "Lung"), (0.77, 0.65, 0.61)),
    "left lung": (ANATOMICAL_STRUCTURE, ("SCT", "44029006", "Left lung"), (0.77, 0.65, 0.61)),
    "right lung": (ANATOMICAL_STRUCTURE, ("SCT", "3341006", "Right lung"), (0.77, 0.65, 0.61)),
    "stomach": (ANATOMICAL_STRUCTURE, ("SCT", "69695003", "Stomach"), (0.85, 0.73, 0.51)),
    "aorta": (ANATOMICAL_STRUCTURE, ("SCT", "15825003", "Aorta"), (0.88, 0.38, 0.32)),
    "gallbladder": (ANATOMICAL_STRUCTURE, ("SCT", "28231008", "Gallbladder"), (0.54, 0.78, 0.35)),
    "heart": (ANATOMICAL_STRUCTURE, ("SCT", "80891009", "Heart"), (0.81, 0.24, 0.24)),
    "brain": (ANATOMICAL_STRUCTURE, ("SCT", "12738006", "Brain"), (0.98, 0.98, 0.82)),
    "tumor": _NEOPLASM,
    "tumour": _NEOPLASM,
    "neoplasm": _NEOPLASM,
    "whole tumor": _NEOPLASM,
    "whole tumour": _NEOPLASM,
    "edema": (ALTERED_STRUCTURE, ("SCT", "79654002", "Edema"), (0.99, 0.83, 0.23)),
    "oedema": (ALTERED_STRUCTURE, ("SCT", "79654002", "Edema"), (0.99, 0.83, 0.23)),
    "necrosis": (ALTERED_STRUCTURE, ("SCT", "6574001", "Necrosis"), (0.42, 0.36, 0.76)),
}


def normalise(name: str) -> str:
    """``"Left-Atrium"`` / ``"left_atrium"`` → ``"left atrium"``."""
    return re.sub(r"[\s_-]+", " ", str(name)).strip().lower()


def known(name: str):
    """(category, type, colour) of a structure in the table, or None."""
    return KNOWN_STRUCTURES.get(normalise(name))


def code_text(code: tuple[str, str, str]) -> str:
    scheme, value, meaning = code
    return f"{scheme}^{value}^{meaning}"


def entry(category, type_, context: str = GENERAL_CONTEXT) -> str:
    """Slicer's terminology entry string for a category and a type, each ``(scheme, value, meaning)``."""
    return f"{context}~{code_text(category)}~{code_text(type_)}~^^~{ANATOMIC_CONTEXT}~^^~^^"


def terminology_for(name: str, value: int) -> str:
    """The entry for a label: its SNOMED CT code when the structure is known, else a private code."""
    k = known(name)
    if k:
        return entry(k[0], k[1])
    return entry(ANATOMICAL_STRUCTURE, (PRIVATE_SCHEME, str(int(value)), str(name).strip() or f"Label {value}"))


def color_for(name: str, value: int) -> tuple[float, float, float]:
    """The structure's usual colour when known, else a distinct stable colour per value (golden-angle hues)."""
    k = known(name)
    if k:
        return k[2]
    return colorsys.hsv_to_rgb((int(value) * 0.618033988749895) % 1.0, 0.65, 0.95)


def label_entry(value: int, name: str, color=None, terminology: str | None = None) -> dict:
    """A model-card label ``{"value", "name", "color", "terminology"}`` (background: black, no code)."""
    value = int(value)
    if value == 0:
        return {"value": 0, "name": str(name), "color": [0.0, 0.0, 0.0]}
    color = list(color) if color is not None else [round(c, 4) for c in color_for(name, value)]
    return {"value": value, "name": str(name), "color": [float(c) for c in color],
            "terminology": terminology or terminology_for(name, value)}


def type_meaning(terminology: str) -> str | None:
    """The type's code meaning of an entry string (``"Left atrium"``), for DICOM SEG and reports."""
    parts = terminology.split("~")
    if len(parts) >= 3 and parts[2].count("^") == 2:
        return parts[2].split("^")[2] or None
    return None
