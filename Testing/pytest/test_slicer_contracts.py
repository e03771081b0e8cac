"""Rules of real Slicer that the GUI layer must obey, checked without Slicer.

The widgets, ``.ui`` files and the Segment Editor effect run only inside Slicer, so each rule below is
written from Slicer's source (tags v5.10.0 and v5.12.3, which agree on every rule here; the file is named
at each table) and checked against our ``.ui`` files and module code by reading them (XML and Python AST,
nothing of Slicer is imported or imitated). ``test_checker_*`` feed the checkers the defects they guard
against (e.g. the ``device: str`` field bound to a ``QComboBox`` that made the first launch fail) and show
that each one is reported.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import sys
import typing
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MODULES = {  # module → (.ui file, module file)
    "LightUNETRSegmentation": ("Resources/UI/LightUNETRSegmentation.ui", "LightUNETRSegmentation.py"),
    "LightUNETRTraining": ("Resources/UI/LightUNETRTraining.ui", "LightUNETRTraining.py"),
}
for _module in MODULES:  # the Qt-free libraries the module files import their choices and ranges from
    if str(REPO / _module) not in sys.path:
        sys.path.insert(0, str(REPO / _module))

# ------------------------------------------------------------------------------------------------------
# Base/Python/slicer/parameterNodeWrapper/guiConnectors.py (v5.10.0 = v5.12.3): which widget classes bind
# to which field types. The connectors test ``type(widget) in (...)``: the exact class, not a subclass.
# "bounds": the connector raises without WithinRange (or Minimum and Maximum); "choice": it raises without
# Choice ("ComboBoxToStringableConnector requires the Choice annotation"); "replaces-range": without bounds
# it sets the widget's range to -inf..inf (floats) or -2**31..2**31-1 (ints), replacing the .ui range, which
# this project forbids (slicer-gui-rules.md).
CONNECTORS = [
    ({"QCheckBox", "ctkCheckBox", "QPushButton", "ctkCheckablePushButton"}, {"bool"}, set()),
    ({"QSlider"}, {"int"}, {"bounds"}),
    ({"QSpinBox"}, {"int"}, {"replaces-range"}),
    ({"QDoubleSpinBox", "ctkDoubleSpinBox", "ctkDoubleSlider", "qMRMLSpinBox"}, {"float", "int"}, {"replaces-range"}),
    ({"ctkSliderWidget", "qMRMLSliderWidget"}, {"float", "int"}, {"bounds"}),
    ({"QComboBox", "ctkComboBox"}, {"int", "float", "str", "bool"}, {"choice"}),
    ({"QLineEdit", "QLabel", "QTextEdit"}, {"str"}, set()),
    ({"ctkRangeWidget", "ctkDoubleRangeSlider", "qMRMLRangeWidget"}, {"FloatRange"}, {"range-bounds"}),
    ({"ctkPathLineEdit", "ctkDirectoryButton"}, {"Path"}, set()),
    ({"qMRMLNodeComboBox"}, {"node"}, set()),
    ({"ctkColorPickerButton"}, {"QColor"}, set()),
]

# ------------------------------------------------------------------------------------------------------
# Classes our .ui files may use, their base class and the properties a .ui may set on them. Qt classes:
# Qt 5.15 / 6 documentation (the properties below exist in both). CTK: Libs/Widgets/*.h at the CTK commits
# Slicer pins (SuperBuild/External_CTK.cmake: dd4caeae for v5.10.0, 5056664a for v5.12.3; same lists).
# Slicer: Libs/MRML/Widgets/qMRMLNodeComboBox.h, qMRMLWidget.h,
# Modules/Loadable/SubjectHierarchy/Widgets/qMRMLSubjectHierarchyComboBox.h.
WIDGETS = {
    "QWidget": (None, {"geometry", "sizePolicy", "minimumSize", "maximumSize", "toolTip", "statusTip", "whatsThis",
                       "enabled", "visible", "font", "styleSheet", "windowTitle", "focusPolicy", "layoutDirection"}),
    "QFrame": ("QWidget", {"frameShape", "frameShadow", "lineWidth", "midLineWidth"}),
    "QLabel": ("QFrame", {"text", "textFormat", "alignment", "wordWrap", "margin", "indent", "openExternalLinks",
                          "textInteractionFlags", "pixmap", "scaledContents"}),
    "QAbstractButton": ("QWidget", {"text", "icon", "iconSize", "checkable", "checked", "shortcut", "autoRepeat"}),
    "QPushButton": ("QAbstractButton", {"default", "autoDefault", "flat"}),
    "QCheckBox": ("QAbstractButton", {"tristate"}),
    "QComboBox": ("QWidget", {"editable", "currentIndex", "currentText", "maxVisibleItems", "maxCount",
                              "insertPolicy", "sizeAdjustPolicy", "minimumContentsLength", "duplicatesEnabled",
                              "frame", "placeholderText"}),
    "QAbstractSpinBox": ("QWidget", {"wrapping", "frame", "alignment", "readOnly", "buttonSymbols", "specialValueText",
                                     "accelerated", "keyboardTracking"}),
    "QSpinBox": ("QAbstractSpinBox", {"suffix", "prefix", "minimum", "maximum", "singleStep", "value", "displayIntegerBase"}),
    "QDoubleSpinBox": ("QAbstractSpinBox", {"prefix", "suffix", "decimals", "minimum", "maximum", "singleStep", "value"}),
    "QLineEdit": ("QWidget", {"text", "placeholderText", "readOnly", "maxLength", "frame", "echoMode", "alignment",
                              "clearButtonEnabled", "inputMask"}),
    "QProgressBar": ("QWidget", {"minimum", "maximum", "value", "alignment", "textVisible", "orientation", "format",
                                 "invertedAppearance"}),
    "QAbstractScrollArea": ("QFrame", {"verticalScrollBarPolicy", "horizontalScrollBarPolicy", "sizeAdjustPolicy"}),
    "QPlainTextEdit": ("QAbstractScrollArea", {"readOnly", "plainText", "placeholderText", "maximumBlockCount",
                                               "lineWrapMode", "tabChangesFocus", "undoRedoEnabled"}),
    "QAbstractItemView": ("QAbstractScrollArea", {"selectionBehavior", "selectionMode", "editTriggers",
                                                  "alternatingRowColors", "showDropIndicator", "dragEnabled",
                                                  "iconSize", "textElideMode"}),
    "QTableView": ("QAbstractItemView", {"showGrid", "gridStyle", "sortingEnabled", "wordWrap", "cornerButtonEnabled"}),
    "QTableWidget": ("QTableView", {"rowCount", "columnCount"}),
    # CTK
    "ctkCollapsibleButton": ("QAbstractButton", {"collapsed", "collapsedHeight", "flat", "contentsFrameShape",
                                                 "contentsFrameShadow", "contentsLineWidth", "contentsMidLineWidth",
                                                 "buttonTextAlignment", "indicatorAlignment"}),
    "ctkPathLineEdit": ("QWidget", {"label", "filters", "currentPath", "options", "settingKey", "showBrowseButton",
                                    "showHistoryButton", "sizeAdjustPolicy", "minimumContentsLength", "nameFilters"}),
    "ctkComboBox": ("QComboBox", {"defaultText", "defaultIcon", "forceDefault", "elideMode", "scrollWheelEffect",
                                  "currentUserDataAsString"}),
    # Slicer
    "qMRMLWidget": ("QWidget", set()),
    "qMRMLNodeComboBox": ("QWidget", {"currentNodeID", "currentNodeId", "nodeTypes", "showHidden", "showChildNodeTypes",
                                      "hideChildNodeTypes", "baseName", "noneEnabled", "addEnabled", "removeEnabled",
                                      "editEnabled", "renameEnabled", "interactionNodeSingletonTag",
                                      "selectNodeUponCreation", "noneDisplay", "sizeAdjustPolicy"}),
    "qMRMLSubjectHierarchyComboBox": ("ctkComboBox", {"showRootItem", "highlightReferencedItems",
                                                      "maximumNumberOfShownItems", "alignPopupVertically", "noneEnabled",
                                                      "noneDisplay", "showCurrentItemParents", "showEmptyHierarchyItems",
                                                      "includeItemAttributeNamesFilter", "includeNodeAttributeNamesFilter",
                                                      "excludeItemAttributeNamesFilter", "excludeNodeAttributeNamesFilter",
                                                      "attributeNameFilter", "attributeValueFilter", "nodeTypes"}),
}
# Enumerators a .ui may name (Qt docs; ctkPathLineEdit.h "enum Filter").
ENUMS = {
    "QAbstractItemView": {"SelectItems", "SelectRows", "SelectColumns", "NoSelection", "SingleSelection",
                          "MultiSelection", "ExtendedSelection", "ContiguousSelection", "NoEditTriggers",
                          "CurrentChanged", "DoubleClicked", "SelectedClicked", "EditKeyPressed", "AnyKeyPressed",
                          "AllEditTriggers"},
    "ctkPathLineEdit": {"Dirs", "Files", "Drives", "NoSymLinks", "AllEntries", "TypeMask", "Readable", "Writable",
                        "Executable", "PermissionMask", "Modified", "Hidden", "System", "AccessMask", "AllDirs",
                        "CaseSensitive", "NoDotAndDotDot", "NoDot", "NoDotDot", "NoFilter"},
}
DYNAMIC_PROPERTIES = {"SlicerParameterName", "SlicerPackParameterName"}  # stdset="0": read by the wrapper

# ------------------------------------------------------------------------------------------------------
# Base/Python/slicer/util.py: the functions our Slicer-facing code calls, with their parameters; the same
# at v5.10.0 and v5.12.3 ("**": further keywords go to the Qt object, e.g. QMessageBox.detailedText).
SLICER_UTIL = {
    "addVolumeFromArray": ["narray", "ijkToRAS", "name", "nodeClassName"],
    "arrayFromSegmentBinaryLabelmap": ["segmentationNode", "segmentId", "referenceVolumeNode"],
    "arrayFromSegmentInternalBinaryLabelmap": ["segmentationNode", "segmentId"],
    "arrayFromVolume": ["volumeNode"],
    "childWidgetVariables": ["widget"],
    "confirmOkCancelDisplay": ["text", "windowTitle", "parent", "**"],
    "confirmYesNoDisplay": ["text", "windowTitle", "parent", "**"],
    "createProgressDialog": ["parent", "value", "maximum", "labelText", "windowTitle", "**"],
    "delayDisplay": ["message", "autoCloseMsec", "parent", "**"],
    "errorDisplay": ["text", "windowTitle", "parent", "standardButtons", "**"],
    "getModuleLogic": ["module"],
    "getNode": ["pattern", "index", "scene"],
    "getNodesByClass": ["className", "scene"],
    "infoDisplay": ["text", "windowTitle", "parent", "standardButtons", "**"],
    "loadUI": ["path"],
    "mainWindow": [],
    "restart": [],
    "selectModule": ["module"],
    "showStatusMessage": ["message", "duration"],
    "tryWithErrorDisplay": ["message", "show", "waitCursor"],
    "updateSegmentBinaryLabelmapFromArray": ["narray", "segmentationNode", "segmentId", "referenceVolumeNode"],
    "updateVolumeFromArray": ["volumeNode", "narray"],
    "VTKObservationMixin": None,
    "WaitCursor": None,
    "NodeModify": None,
}
# Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorAbstractEffect.h (public API, properties)
# and qSlicerSegmentEditorScriptedEffect.h: what ``self.scriptedEffect`` offers at both tags.
EFFECT_API = {
    "name", "title", "perSegment", "requireSegments", "showEffectCursorInSliceView", "showEffectCursorInThreeDView",
    "activate", "deactivate", "active", "modifySelectedSegmentByLabelmap", "modifySegmentByLabelmap", "applyImageMask",
    "createCursor", "updateGUIFromMRML", "updateMRMLFromGUI", "parameterSetNode", "setParameterSetNode", "scene",
    "optionsFrame", "optionsLayout", "addActor2D", "removeActor2D", "addActor3D", "removeActor3D", "addOptionsWidget",
    "addLabeledOptionsWidget", "setName", "setTitle", "setPerSegment", "setRequireSegments", "cursorOff", "cursorOn",
    "selectEffect", "parameter", "integerParameter", "doubleParameter", "nodeReference", "setParameter",
    "setParameterDefault", "setCommonParameter", "setCommonParameterDefault", "setNodeReference",
    "setCommonNodeReference", "parameterDefined", "commonParameterDefined", "confirmCurrentSegmentVisible",
    "modifierLabelmap", "defaultModifierLabelmap", "maskLabelmap", "selectedSegmentLabelmap", "referenceGeometryImage",
    "sourceVolumeImageData", "saveStateForUndo", "renderWindow", "renderer", "viewNode", "rasToXy", "xyzToRas",
    "xyToRas", "xyzToIjk", "xyToIjk", "forceRender", "scheduleRender", "sliceSpacing", "segmentationDisplayableInView",
    "setPythonSource", "self",
}
# qSlicerSegmentEditorAbstractEffect::ModificationMode
MODIFICATION_MODES = {"ModificationModeSet", "ModificationModeAdd", "ModificationModeRemove", "ModificationModeRemoveAll"}
EFFECT_FILE = "LightUNETRSegmentation/SegmentEditorLightUNETRLib/SegmentEditorEffect.py"
# The calls that write segment content: the effect must not use them (they bypass the editor's masking,
# intensity range and overwrite mode; slicer-gui-rules.md, "Segment Editor effects").
DIRECT_SEGMENT_WRITES = {"updateSegmentBinaryLabelmapFromArray", "SetBinaryLabelmapToSegment",
                         "ImportLabelmapToSegmentationNode", "ImportModelToSegmentationNode", "AddSegment",
                         "RemoveSegment", "import_labelmap_file", "SetBinaryLabelmapRepresentation"}


def _read(path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# ------------------------------------------------------------------------------------------------------ .ui
@dataclass
class UiWidget:
    cls: str
    name: str
    properties: dict = field(default_factory=dict)  # name → (kind, text) e.g. ("string", "device")


def parse_ui(text: str) -> tuple[list[UiWidget], set[str]]:
    """(widgets, declared custom widget classes) of a .ui file."""
    root = ET.fromstring(text)
    widgets = []
    for w in root.iter("widget"):
        props = {}
        for p in w.findall("property"):
            child = next(iter(p), None)
            if child is None:
                continue
            if child.tag == "stringlist":
                props[p.get("name")] = ("stringlist", [s.text or "" for s in child.findall("string")])
            else:
                props[p.get("name")] = (child.tag, child.text or "")
        widgets.append(UiWidget(w.get("class"), w.get("name"), props))
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    return widgets, custom


def _class_properties(cls: str) -> set:
    out = set()
    while cls is not None:
        base, props = WIDGETS[cls]
        out |= props
        cls = base
    return out


def check_ui_classes_and_properties(text: str) -> list[str]:
    """Every widget class is one Slicer has (Qt, CTK, Slicer), custom ones are declared, every property is
    one that class has, every enumerator exists."""
    widgets, custom = parse_ui(text)
    problems = []
    for w in widgets:
        if w.cls not in WIDGETS:
            problems.append(f"{w.name}: unknown widget class {w.cls} (not in this test's table of Qt/CTK/Slicer classes)")
            continue
        if not w.cls.startswith("Q") and w.cls not in custom:
            problems.append(f"{w.name}: {w.cls} is not declared in <customwidgets>")
        allowed = _class_properties(w.cls) | DYNAMIC_PROPERTIES
        for prop, (kind, value) in w.properties.items():
            if prop not in allowed:
                problems.append(f"{w.name} ({w.cls}): no property '{prop}'")
            if kind in ("enum", "set"):
                for token in value.split("|"):
                    owner, _, member = token.partition("::")
                    if member not in ENUMS.get(owner, set()):
                        problems.append(f"{w.name}: unknown enumerator {token}")
    return problems


# ------------------------------------------------------------------------------------------------------ parameter nodes
class _Validator:
    def __init__(self, *args):
        self.args = args


class Choice(_Validator):
    pass


class WithinRange(_Validator):
    pass


class Minimum(_Validator):
    pass


class Maximum(_Validator):
    pass


class _NodeClass:
    def __init__(self, name):
        self.name = name


class _SlicerNames:
    """Stands for ``slicer`` inside annotation expressions only: ``slicer.vtkMRMLX`` is the node class name."""

    def __getattr__(self, name):
        return _NodeClass(name)


@dataclass
class Field:
    name: str
    type: str  # "str", "int", "float", "bool", "Path", "node", ...
    node_class: str | None
    validators: list
    default: object


def _annotation_namespace(module_source: str) -> dict:
    """Names an annotation of a module's parameter node class may use: typing, our recorders of the
    validators' arguments, and the module's own Qt-free imports and constants, evaluated for real."""
    ns = {"Annotated": typing.Annotated, "Choice": Choice, "WithinRange": WithinRange, "Minimum": Minimum,
          "Maximum": Maximum, "slicer": _SlicerNames(), "pathlib": pathlib}
    tree = ast.parse(module_source)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].endswith("Lib"):
            exec(compile(ast.Module([node], []), "<imports>", "exec"), ns)
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            try:
                exec(compile(ast.Module([node], []), "<constants>", "exec"), ns)
            except Exception:  # noqa: BLE001 - a constant that needs Slicer is not used by annotations
                pass
    return ns


def parameter_node_fields(module_source: str) -> dict[str, Field] | None:
    """The fields of the module's ``@parameterNodeWrapper`` class (None when it has none)."""
    tree = ast.parse(module_source)
    ns = _annotation_namespace(module_source)
    for node in ast.walk(tree):  # also a class defined inside an ``if``
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list):
            fields = {}
            for stmt in node.body:
                if not isinstance(stmt, ast.AnnAssign):
                    continue
                annotation = eval(compile(ast.Expression(stmt.annotation), "<annotation>", "eval"), ns)
                default = (eval(compile(ast.Expression(stmt.value), "<default>", "eval"), ns)
                           if stmt.value is not None else None)
                base, validators = annotation, []
                if typing.get_origin(annotation) is typing.Annotated:
                    base, *validators = typing.get_args(annotation)
                if isinstance(base, _NodeClass):
                    kind, node_class = "node", base.name
                elif base in (pathlib.Path, pathlib.PurePath, pathlib.PosixPath, pathlib.WindowsPath):
                    kind, node_class = "Path", None
                else:
                    kind, node_class = getattr(base, "__name__", str(base)), None
                fields[stmt.target.id] = Field(stmt.target.id, kind, node_class, validators, default)
            return fields
    return None


def check_bindings(ui_text: str, module_source: str) -> list[str]:
    """Every widget that names a parameter (``SlicerParameterName``) binds: the field exists and the
    widget class + field type + annotations is a pair Slicer's connectors accept, without replacing the
    .ui's range; defaults satisfy the validators; node selectors offer the annotated class."""
    widgets, _ = parse_ui(ui_text)
    fields = parameter_node_fields(module_source)
    problems = []
    bound = [w for w in widgets if "SlicerParameterName" in w.properties]
    if bound and fields is None:
        return [f"the .ui binds {[w.name for w in bound]} but the module has no @parameterNodeWrapper class"]
    for w in bound:
        name = w.properties["SlicerParameterName"][1]
        f = (fields or {}).get(name)
        if f is None:
            problems.append(f"{w.name}: SlicerParameterName '{name}' is not a field of the parameter node "
                            "(wrapper.py _checkParamName raises ValueError in connectGui)")
            continue
        connector = next((c for c in CONNECTORS if w.cls in c[0] and f.type in c[1]), None)
        if connector is None:
            problems.append(f"{w.name}: no GUI connector binds a {w.cls} to a '{f.type}' field '{name}' "
                            "(guiConnectors.py createGuiConnector raises RuntimeError)")
            continue
        kinds = {type(v).__name__ for v in f.validators}
        needs = connector[2]
        bounded = "WithinRange" in kinds or {"Minimum", "Maximum"} <= kinds
        if "choice" in needs and "Choice" not in kinds:
            problems.append(f"{w.name}: the {w.cls} field '{name}' needs Annotated[{f.type}, Choice([...])] "
                            "(QComboBoxToStringableConnector raises RuntimeError)")
        if "bounds" in needs and not bounded:
            problems.append(f"{w.name}: the {w.cls} field '{name}' needs WithinRange (the connector raises)")
        if "replaces-range" in needs and not bounded:
            problems.append(f"{w.name}: the field '{name}' has no WithinRange: the connector replaces the .ui range "
                            "with an unbounded one")
        for v in f.validators:
            if isinstance(v, Choice):
                if f.default not in v.args[0]:
                    problems.append(f"{w.name}: default {f.default!r} of '{name}' is not one of its choices {v.args[0]}")
                if any(type(c).__name__ != f.type for c in v.args[0]):
                    problems.append(f"{w.name}: choices of '{name}' are not all {f.type}")
            if isinstance(v, WithinRange):
                lo, hi = v.args
                if not lo <= f.default <= hi:
                    problems.append(f"{w.name}: default {f.default!r} of '{name}' is outside [{lo}, {hi}]")
                ui = {k: w.properties.get(k, (None, None))[1] for k in ("minimum", "maximum")}
                if ui["minimum"] is not None and ui["maximum"] is not None and \
                        (float(ui["minimum"]), float(ui["maximum"])) != (float(lo), float(hi)):
                    problems.append(f"{w.name}: the .ui range {ui['minimum']}..{ui['maximum']} differs from "
                                    f"WithinRange({lo}, {hi}) that replaces it")
        if f.type == "node":
            types = w.properties.get("nodeTypes", ("stringlist", []))[1]
            if types and f.node_class not in types:
                problems.append(f"{w.name}: nodeTypes {types} do not offer the field's {f.node_class}")
    return problems


def check_bound_widgets_not_filled_by_code(ui_text: str, module_source: str) -> list[str]:
    """A combo box bound to a Choice field is filled by the connector (it clears the combo first); code
    that adds items to it fights the connector."""
    widgets, _ = parse_ui(ui_text)
    bound = {w.name for w in widgets if "SlicerParameterName" in w.properties and w.cls in ("QComboBox", "ctkComboBox")}
    return [f"{m.group(1)}: items added by code to a combo box bound to the parameter node"
            for m in re.finditer(r"self\.ui\.(\w+)\.(?:addItems?|clear|insertItems?)\(", module_source)
            if m.group(1) in bound]


# ------------------------------------------------------------------------------------------------------ signals
#: Signals connected by name (``obj.connect("signal(args)", slot)``): PythonQt connects nothing and only logs
#: when the signature is wrong, so a typo is a button that silently does nothing. Each entry names its
#: declaration: Qt 5 class documentation, or the header at Slicer v5.10.0 and v5.12.3 / CTK dd4caeae and 5056664a.
SIGNALS = {
    "aboutToQuit()": "QCoreApplication",
    "accepted()": "QDialogButtonBox",
    "rejected()": "QDialogButtonBox",
    "canceled()": "QProgressDialog",
    "clicked()": "QAbstractButton (clicked(bool checked = false))",
    "clicked(bool)": "QAbstractButton",
    "currentIndexChanged(int)": "QComboBox",
    "currentTextChanged(QString)": "QComboBox",
    "currentRowChanged(int)": "QListWidget",
    "timeout()": "QTimer",
    "currentPathChanged(QString)": "CTK Libs/Widgets/ctkPathLineEdit.h",
    "currentItemChanged(vtkIdType)": "Slicer Modules/Loadable/SubjectHierarchy/Widgets/qMRMLSubjectHierarchyComboBox.h",
    "currentNodeChanged(vtkMRMLNode*)": "Slicer Libs/MRML/Widgets/qMRMLNodeComboBox.h",
    "startupCompleted()": "Slicer Base/QTGUI/qSlicerApplication.h",
}
#: Slots connected by name (``obj.connect("signal()", receiver, "slot()")``).
SLOTS = {"accept()": "QDialog", "reject()": "QDialog"}


def check_signals(source: str) -> list[str]:
    """Every signal (and slot) connected by its signature string is one of :data:`SIGNALS` (:data:`SLOTS`)."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("connect", "disconnect")):
            continue
        strings = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if not strings or "(" not in strings[0]:
            continue
        if strings[0] not in SIGNALS:
            problems.append(f"line {node.lineno}: signal {strings[0]!r} is not in this test's table of declared signals")
        for slot in strings[1:]:
            if slot not in SLOTS:
                problems.append(f"line {node.lineno}: slot {slot!r} is not in this test's table of declared slots")
    return problems


# ------------------------------------------------------------------------------------------------------ Python API
def _attribute_chain(node) -> list[str]:
    names = []
    while isinstance(node, ast.Attribute):
        names.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.insert(0, node.id)
    return names


def check_slicer_api(source: str) -> list[str]:
    """``slicer.util.X`` exists at both tags with the keywords used; ``self.scriptedEffect.X`` is the
    effect API; modification modes exist; no ``slicer.packaging`` (not in Slicer 5.10)."""
    problems = []
    tree = ast.parse(source)
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain = _attribute_chain(node)
        if chain[:2] == ["slicer", "util"] and len(chain) == 3:
            name = chain[2]
            if name not in SLICER_UTIL:
                problems.append(f"line {node.lineno}: slicer.util.{name} is not in this test's table of functions "
                                "checked at v5.10.0 and v5.12.3")
            elif id(node) in calls and SLICER_UTIL[name] is not None:
                params = SLICER_UTIL[name]
                for kw in calls[id(node)].keywords:
                    if kw.arg and kw.arg not in params and "**" not in params:
                        problems.append(f"line {node.lineno}: slicer.util.{name} has no parameter '{kw.arg}'")
        elif chain[:2] == ["slicer", "packaging"]:
            problems.append(f"line {node.lineno}: slicer.packaging does not exist in Slicer 5.10")
        elif chain[:2] == ["self", "scriptedEffect"] and len(chain) == 3 and chain[2] not in EFFECT_API:
            problems.append(f"line {node.lineno}: scriptedEffect has no '{chain[2]}'")
        elif len(chain) == 3 and chain[:2] == ["slicer", "qSlicerSegmentEditorAbstractEffect"] and \
                chain[2] not in MODIFICATION_MODES:
            problems.append(f"line {node.lineno}: qSlicerSegmentEditorAbstractEffect has no '{chain[2]}'")
    return problems


def _called_names(source: str) -> set:
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None))
    return out


def _slicer_side_files():
    for module in MODULES:
        for path in sorted((REPO / module).rglob("*.py")):
            yield path
    yield from sorted((REPO / "Testing" / "Python").rglob("*.py"))  # the Slicer self-tests


# ====================================================================================================== tests
@pytest.mark.parametrize("module", sorted(MODULES))
def test_ui_classes_and_properties_exist(module):
    ui, _ = MODULES[module]
    problems = check_ui_classes_and_properties(_read(REPO / module / ui))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_bound_widget_binds(module):
    ui, py = MODULES[module]
    problems = check_bindings(_read(REPO / module / ui), _read(REPO / module / py))
    assert not problems, "\n".join(problems)
    assert parameter_node_fields(_read(REPO / module / py)), f"{module} has no parameter node"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_bound_combo_boxes_are_left_to_the_connector(module):
    ui, py = MODULES[module]
    problems = check_bound_widgets_not_filled_by_code(_read(REPO / module / ui), _read(REPO / module / py))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_ui_has_the_widgets_the_module_uses(module):
    ui, py = MODULES[module]
    widgets, _ = parse_ui(_read(REPO / module / ui))
    used = set(re.findall(r"self\.ui\.(\w+)", _read(REPO / module / py)))
    assert used and not (used - {w.name for w in widgets}), sorted(used - {w.name for w in widgets})


@pytest.mark.parametrize("path", list(_slicer_side_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_slicer_api_calls_exist_at_both_tags(path):
    problems = check_slicer_api(_read(path))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", list(_slicer_side_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_connected_signals_are_declared(path):
    problems = check_signals(_read(path))
    assert not problems, "\n".join(problems)


def test_checker_reports_a_misspelt_signal_or_slot():
    source = 'b.connect("clicked(bool)", f)\nt.connect("timeOut()", f)\nd.connect("accepted()", w, "acept()")\n'
    assert check_signals(source) == ["line 2: signal 'timeOut()' is not in this test's table of declared signals",
                                     "line 3: slot 'acept()' is not in this test's table of declared slots"]


def test_effect_writes_segments_only_through_the_editor():
    for rel in (EFFECT_FILE, "LightUNETRSegmentation/LightUNETRSegmentationLib/effectlogic.py"):
        direct = _called_names(_read(REPO / rel)) & DIRECT_SEGMENT_WRITES
        assert not direct, f"{rel} writes segments directly: {sorted(direct)}"
    effect = _read(REPO / EFFECT_FILE)
    assert "modifySegmentByLabelmap" in _called_names(effect) and "saveStateForUndo" in _called_names(effect)


def test_only_the_job_runner_starts_processes():
    """Every child process goes through lightunetr_core.jobs.runner (which hides the console window on Windows);
    no Slicer-side file calls subprocess itself."""
    offenders = []
    for path in _slicer_side_files():
        for node in ast.walk(ast.parse(_read(path))):
            if isinstance(node, ast.Attribute) and _attribute_chain(node)[:1] == ["subprocess"]:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_training_uses_the_shared_library_not_the_segmentation_modules_internals():
    """What both modules need (volume I/O, segment import, model library, environment check, parameter binding)
    is in LightUNETRSlicerLib; from the Segmentation module the Training module uses only its logic (to segment
    the unlabelled cases, as Slicer modules use each other's logic)."""
    allowed = {"LightUNETRSegmentationLib.logic"}
    reached = []
    for path in sorted((REPO / "LightUNETRTraining").rglob("*.py")):
        for node in ast.walk(ast.parse(_read(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("LightUNETRSegmentationLib"):
                if node.module not in allowed:
                    reached.append(f"{path.relative_to(REPO)}:{node.lineno} {node.module}")
            elif isinstance(node, ast.Import):
                reached += [f"{path.relative_to(REPO)}:{node.lineno} {a.name}" for a in node.names
                            if a.name.startswith("LightUNETRSegmentationLib")]
    assert not reached, reached


def test_effect_is_registered_by_the_segmentation_module():
    source = _read(REPO / "LightUNETRSegmentation/LightUNETRSegmentation.py")
    assert 'slicer.app.connect("startupCompleted()", self.registerEditorEffect)' in source
    assert os.path.isfile(REPO / EFFECT_FILE)
    assert '"SegmentEditorLightUNETRLib", "SegmentEditorEffect.py"' in source


def check_gui_binding(source: str) -> list[str]:
    """``Base/Python/slicer/parameterNodeWrapper/wrapper.py`` (v5.10.0 and v5.12.3): ``connectGui`` returns
    ``self._nextParameterGUIsTag``, which starts at 0. Code that keeps the tag and tests it for truth
    (``if node and tag: node.disconnectGui(tag)``) never disconnects the first binding; its combo-box
    connectors then write the first choice into the node each time a later binding refills the combo boxes
    (``guiConnectors.py``: ``QComboBoxToStringableConnector.__init__`` clears its widget). The modules
    connect through ``parameters.GuiBinding`` only, whose tests below cover tag 0."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("connectGui", "disconnectGui"):
            problems.append(f"line {node.lineno}: {node.func.attr}() called directly; use parameters.GuiBinding")
    return problems


@pytest.mark.parametrize("path", list(_slicer_side_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_parameter_nodes_connect_only_through_gui_binding(path):
    if path.name == "parameters.py":  # GuiBinding itself
        return
    problems = check_gui_binding(_read(path))
    assert not problems, "\n".join(problems)


class _WrapperTags:
    """The tag bookkeeping of wrapper.py's connectGui/disconnectGui (first tag 0), nothing else: the real
    wrapper needs Slicer's Qt, so GuiBinding is driven against these two methods as wrapper.py defines them."""

    def __init__(self):
        self._next = 0
        self.live = set()

    def connectGui(self, ui):
        tag, self._next = self._next, self._next + 1
        self.live.add(tag)
        return tag

    def disconnectGui(self, tag):
        self.live.remove(tag)  # KeyError for a tag that is not connected, as wrapper.py's dict pop


def test_gui_binding_disconnects_tag_zero_and_connects_a_node_once():
    from LightUNETRSlicerLib.parameters import GuiBinding

    a, b = _WrapperTags(), _WrapperTags()
    binding = GuiBinding(ui=object())
    assert binding.bind(a) and a.live == {0} and binding.connected
    assert not binding.bind(a) and a.live == {0}  # enter() again: no second binding (5.10 observer leak)
    assert binding.bind(b) and a.live == set() and b.live == {0}  # tag 0 was disconnected
    assert binding.bind(None) and b.live == set() and not binding.connected
    assert binding.bind(b) and b.live == {1}


def test_checker_reports_the_tag_zero_defect():
    """The first-launch code tested the tag for truth and called connectGui itself."""
    old = ("if self._parameterNode and self._parameterNodeGuiTag:\n"
           "    self._parameterNode.disconnectGui(self._parameterNodeGuiTag)\n"
           "self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)\n")
    assert sorted(p.split(":")[0] for p in check_gui_binding(old)) == ["line 2", "line 3"]


def imported_top_level_names(sources) -> set:
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def check_effect_folder(effect_path: pathlib.Path, sources) -> list[str]:
    """Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorScriptedEffect.cxx setPythonSource
    takes the effect file's folder name as the module name and, unless sys.modules already holds a module of
    that name with the effect class, loads the file as that module (Base/QTCore/qSlicerScriptedUtils.cxx
    loadSourceAsModule: ``sys.modules[name] = module``). A package of that name that code imports would be
    replaced by the effect file, breaking every later ``from <package> import ...``."""
    folder = effect_path.parent.name
    problems = []
    if folder in imported_top_level_names(sources):
        problems.append(f"the effect's folder '{folder}' is also imported as a package; Slicer would replace it")
    if (effect_path.parent / "__init__.py").exists():
        problems.append(f"'{folder}' has an __init__.py: it is loaded as a plain module, not a package")
    return problems


def test_effect_folder_is_never_imported_as_a_package():
    sources = [_read(p) for p in REPO.rglob("*.py") if ".venv" not in p.parts]
    problems = check_effect_folder(REPO / EFFECT_FILE, sources)
    assert not problems, problems


def test_checker_reports_an_effect_in_an_imported_package(tmp_path):
    """The first layout of this change put the effect in LightUNETRSegmentationLib, which the modules import."""
    effect = tmp_path / "LightUNETRSegmentationLib" / "SegmentEditorEffect.py"
    effect.parent.mkdir()
    effect.write_text("")
    (effect.parent / "__init__.py").write_text("")
    problems = check_effect_folder(effect, ["from LightUNETRSegmentationLib.logic import shared_logic\n"])
    assert len(problems) == 2, problems


def test_documentation_link_is_on_the_extension_homepage():
    from LightUNETRSlicerLib import DOCUMENTATION_URL

    homepage = re.search(r'set\(EXTENSION_HOMEPAGE\s+"([^"]+)"\)', _read(REPO / "CMakeLists.txt")).group(1)
    assert DOCUMENTATION_URL.startswith(homepage + "/")


# ------------------------------------------------------------------------------------------------------ the checkers fail
OLD_UI = """<ui version="4.0"><widget class="qMRMLWidget" name="W">
  <widget class="QComboBox" name="deviceComboBox"><property name="SlicerParameterName" stdset="0"><string>device</string></property></widget>
  <widget class="QDoubleSpinBox" name="overlapSpinBox"><property name="minimum"><double>0.0</double></property><property name="maximum"><double>0.9</double></property><property name="SlicerParameterName" stdset="0"><string>overlap</string></property></widget>
 </widget><customwidgets><customwidget><class>qMRMLWidget</class></customwidget></customwidgets></ui>"""
OLD_NODE = """
@parameterNodeWrapper
class P:
    model: str = ""
    device: str = "auto"
    overlap: float = 0.5
"""


def test_checker_reports_the_first_launch_defects():
    """The definitions that broke the first launch (the `device: str` ↔ QComboBox pair, overlap without
    bounds) are reported; the fixed ones are not."""
    problems = check_bindings(OLD_UI, OLD_NODE)
    assert any("deviceComboBox" in p and "Choice" in p for p in problems), problems
    assert any("overlapSpinBox" in p and "WithinRange" in p for p in problems), problems
    fixed = OLD_NODE.replace('device: str = "auto"', 'device: Annotated[str, Choice(["auto", "cpu"])] = "auto"').replace(
        "overlap: float = 0.5", "overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.5")
    assert check_bindings(OLD_UI, fixed) == []


def test_checker_reports_unknown_fields_subclasses_and_bad_defaults():
    ui = OLD_UI.replace("<string>device</string>", "<string>devise</string>")
    assert any("devise" in p and "not a field" in p for p in check_bindings(ui, OLD_NODE))
    sh = OLD_UI.replace('class="QComboBox" name="deviceComboBox"', 'class="qMRMLSubjectHierarchyComboBox" name="deviceComboBox"')
    node = OLD_NODE.replace('device: str = "auto"', 'device: Annotated[str, Choice(["auto"])] = "auto"')
    assert any("no GUI connector" in p for p in check_bindings(sh, node))  # connectors match exact classes
    bad_default = OLD_NODE.replace('device: str = "auto"', 'device: Annotated[str, Choice(["cpu"])] = "auto"')
    assert any("not one of its choices" in p for p in check_bindings(OLD_UI, bad_default))
    wrong_range = OLD_NODE.replace("overlap: float = 0.5", "overlap: Annotated[float, WithinRange(0.0, 1.0)] = 0.5")
    assert any("differs from" in p for p in check_bindings(OLD_UI, wrong_range))


def test_checker_reports_missing_classes_properties_and_api():
    bad = OLD_UI.replace('<property name="minimum">', '<property name="minimun">')
    assert any("no property 'minimun'" in p for p in check_ui_classes_and_properties(bad))
    assert any("not declared" in p for p in check_ui_classes_and_properties(
        OLD_UI.replace("<customwidgets><customwidget><class>qMRMLWidget</class></customwidget></customwidgets>", "")))
    assert any("unknown widget class" in p for p in check_ui_classes_and_properties(OLD_UI.replace("QComboBox", "QComboBoxx")))
    code = ("slicer.util.pip_install(['monai'])\nslicer.util.errorDisplay('x', detailedText='y')\n"
            "slicer.packaging.pip_ensure(['monai'])\nself.scriptedEffect.modifySegment(1)\n"
            "slicer.util.tryWithErrorDisplay('m', cursor=True)\n")
    problems = check_slicer_api(code)
    assert sorted({p.split(":")[0] for p in problems}) == ["line 1", "line 3", "line 4", "line 5"], problems
    combo = OLD_UI
    assert check_bound_widgets_not_filled_by_code(combo, 'self.ui.deviceComboBox.addItems(["auto", "cpu"])')


def test_slicer_side_engine_imports_do_not_import_torch():
    """The network never runs in Slicer's process (docs/slicer.md): every lightunetr_core module the modules
    import (the self-test scenarios aside, which build models on purpose) loads with torch unavailable."""
    import subprocess

    modules = set()
    for path in _slicer_side_files():
        if path.parent.name in ("LightUNETRScenarios", "Python"):
            continue
        for node in ast.walk(ast.parse(_read(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightunetr_core"):
                modules.add(node.module)
            elif isinstance(node, ast.Import):
                modules |= {a.name for a in node.names if a.name.startswith("lightunetr_core")}
    assert "lightunetr_core.inference.options" in modules and "lightunetr_core.bundle" in modules, modules
    code = ("import sys, importlib\nsys.modules['torch'] = None  # any import of torch raises ImportError\n"
            f"for name in {sorted(modules)!r}:\n    importlib.import_module(name)\n"
            # what the model list calls on every card (read_model_card → ModelCard.validate)
            "from lightunetr_core.bundle import ModelCard, default_labels\n"
            "ModelCard(name='m', architecture='lightunetr', architecture_args={'in_channels': 1, 'num_classes': 2},"
            " patch_size=[32, 32, 32], preprocessing={'target_spacing': None, 'normalization': [{'kind': 'zscore'}]},"
            " input_channels=['MR'], labels=default_labels(['background', 'organ'])).validate()\n"
            "print('torch-free:', len(sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
