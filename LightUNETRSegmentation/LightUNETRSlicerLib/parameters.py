"""Values and rules behind the module's parameter node (Qt-free, so they are tested without Slicer).

The parameter node class itself (``LightUNETRSegmentationParameterNode`` in ``LightUNETRSegmentation.py``)
needs ``slicer.parameterNodeWrapper``, which exists only in the Slicer application; its annotations use
the choices and ranges defined here, and ``Testing``'s contract tests check that every ``.ui`` widget and
annotation pair is one that Slicer's GUI connectors accept
(``Base/Python/slicer/parameterNodeWrapper/guiConnectors.py``).
"""

from __future__ import annotations

import os
import sys

from lightunetr_core.vocabulary import DEVICES as ENGINE_DEVICES  # what ``lightunetr segment --device`` accepts


def available_devices(platform: str | None = None) -> tuple[str, ...]:
    """Devices offered in the GUI on this operating system: Apple's MPS exists only on macOS."""
    platform = sys.platform if platform is None else platform
    return ENGINE_DEVICES if platform == "darwin" else ("auto", "cpu", "cuda")


#: The device choices of this machine (the ``Choice`` of the parameter nodes' ``device`` fields).
DEVICES = available_devices()
DEFAULT_DEVICE = "auto"

#: Sliding-window overlap: the engine accepts [0, 1); above 0.9 the cost grows tenfold for no gain.
OVERLAP_RANGE = (0.0, 0.9)
DEFAULT_OVERLAP = 0.5

#: QSettings key of the models folder (an application setting, not a scene parameter).
MODELS_FOLDER_SETTING = "LightUNETR/ModelsFolder"


def device_problem(device: str | None, platform: str | None = None) -> str | None:
    """A message when ``device`` cannot be used here, else None."""
    dev = (device or DEFAULT_DEVICE).lower()
    if dev.startswith("cuda:") and dev[5:].isdigit():
        return None
    if dev not in ENGINE_DEVICES:
        return f"Unknown device '{device}'; use auto, cpu, cuda, cuda:N" + (" or mps." if "mps" in available_devices(platform) else ".")
    if dev not in available_devices(platform):
        return "The 'mps' device (Apple GPU) exists only on macOS; choose auto, cpu or cuda."
    return None


def valid_choice(value, choices, default):
    """``value`` when it is one of ``choices``, else ``default`` (a scene saved on another machine or by
    another version may hold a value this machine does not offer; Slicer's combo-box connector raises on
    it, which would leave the whole GUI unbound)."""
    return value if value in choices else default


def clamp(value: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, value))


def choose_model(current: str, models) -> tuple[str, str | None]:
    """The model the parameter node should hold, given what it holds (``current``: a bundle path, or a
    name from another machine's scene) and the library's models: the same bundle when it is there (by
    path, then by folder name, then by model name), else the first model; ``""`` when there is none.
    Returns (path, message for the user or None)."""
    if not models:
        return "", (f"The scene asks for model '{_label(current)}', which is not installed." if current else None)
    if current:
        wanted = os.path.normcase(os.path.abspath(current)) if os.path.isabs(current) else None
        base = os.path.basename(os.path.normpath(current))
        for match in (
            lambda m: wanted is not None and os.path.normcase(os.path.abspath(m.path)) == wanted,
            lambda m: os.path.basename(os.path.normpath(m.path)) == base,
            lambda m: m.name == current,
        ):
            for m in models:
                if match(m):
                    return m.path, None
        return models[0].path, (f"The scene asks for model '{_label(current)}', which is not installed; "
                                f"using '{models[0].name}' instead.")
    return models[0].path, None


def _label(path_or_name: str) -> str:
    return os.path.basename(os.path.normpath(path_or_name)) or path_or_name


class GuiBinding:
    """Keeps one parameter node wrapper connected to a module widget's ``ui``, at most once.

    Two rules of Slicer's ``Base/Python/slicer/parameterNodeWrapper/wrapper.py`` (v5.10.0 and v5.12.3) shape
    it. ``connectGui`` returns a tag that starts at **0**, so "connected" is ``tag is not None``: a
    truthiness test leaves the first binding live, and its combo-box connectors then write the choices'
    first item into the node whenever a later binding refills the combo boxes (``guiConnectors.py``:
    ``QComboBoxToStringableConnector`` clears and refills its widget). And on 5.10 every ``connectGui``
    adds a ``ModifiedEvent`` observer that ``disconnectGui`` never removes, so the same wrapper stays
    connected across ``exit()``/``enter()`` instead of being connected again each time.
    """

    def __init__(self, ui):
        self.ui = ui
        self.node = None
        self.tag = None

    @property
    def connected(self) -> bool:
        return self.tag is not None

    def bind(self, node) -> bool:
        """Connect ``node`` (a wrapper, or None to unbind); True when the binding changed."""
        if node is self.node and (node is None or self.connected):
            return False
        self.unbind()
        self.node = node
        if node is not None:
            self.tag = node.connectGui(self.ui)
        return True

    def unbind(self) -> None:
        if self.node is not None and self.tag is not None:
            self.node.disconnectGui(self.tag)
        self.tag = None
