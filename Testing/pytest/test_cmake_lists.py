"""Every .py, .ui and icon under the Slicer module folders is listed in that module's CMakeLists.txt
(files not listed are silently left out of the extension package), every listed file exists, and the
top-level CMakeLists.txt declares the extension and adds every module."""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = ["LightUNETRSegmentation", "LightUNETRTraining"]
PACKAGED = (".py", ".ui", ".png", ".svg", ".json", ".csv", ".txt")


def _listed(cmake_text: str, module: str) -> set[str]:
    text = re.sub(r"#[^\n]*", "", cmake_text).replace("${MODULE_NAME}", module)
    listed = set()
    for block in re.findall(r"set\(\s*MODULE_PYTHON_(?:SCRIPTS|RESOURCES)\s+(.*?)\)", text, re.S):
        listed.update(tok for tok in block.split() if tok)
    return listed


def _files(module_dir: str) -> set[str]:
    out = set()
    for root, dirs, files in os.walk(module_dir):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "Testing") and not d.startswith(".")]
        for f in files:
            if f.endswith(PACKAGED) and f != "CMakeLists.txt":
                out.add(os.path.relpath(os.path.join(root, f), module_dir).replace(os.sep, "/"))
    return out


@pytest.mark.parametrize("module", MODULES)
def test_every_module_file_is_listed(module):
    module_dir = os.path.join(REPO, module)
    cmake = os.path.join(module_dir, "CMakeLists.txt")
    if not os.path.exists(cmake):
        pytest.fail(f"{module} has no CMakeLists.txt")
    with open(cmake, encoding="utf-8") as f:
        text = f.read()
    listed = _listed(text, module)
    present = _files(module_dir)
    assert not (present - listed), f"files not listed in {module}/CMakeLists.txt: {sorted(present - listed)}"
    missing = sorted(p for p in listed if not os.path.exists(os.path.join(module_dir, p)))
    assert not missing, f"listed but missing: {missing}"
    assert f"{module}.py" in listed
    assert "slicerMacroBuildScriptedModule" in text


def test_top_level_cmake_declares_extension():
    with open(os.path.join(REPO, "CMakeLists.txt"), encoding="utf-8") as f:
        text = f.read()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf"set\({key}\s+\S", text), key
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"?PyTorch', text)
    assert re.search(r'set\(EXTENSION_CATEGORY\s+"Segmentation"\)', text)
    assert "project(LightUNETR)" in text
    for module in MODULES:
        assert f"add_subdirectory({module})" in text
    assert "lightunetr_core" in text and "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR" in text


def test_icons_are_128px_png():
    import sys

    sys.path.insert(0, os.path.join(REPO, "Testing", "pytest", "slicer_scene"))
    from make_icons import ICONS, draw, read_png

    for rel, kind in ICONS.items():
        img = read_png(os.path.join(REPO, rel))
        assert img.shape == (128, 128, 4), rel
        assert (img == draw(kind)).all(), f"{rel} differs from what make_icons.py draws; rerun it"


def test_ui_file_is_valid_and_has_the_widgets_the_module_uses():
    import xml.etree.ElementTree as ET

    ui = os.path.join(REPO, "LightUNETRSegmentation", "Resources", "UI", "LightUNETRSegmentation.ui")
    names = {w.get("name") for w in ET.parse(ui).iter("widget")}
    with open(os.path.join(REPO, "LightUNETRSegmentation", "LightUNETRSegmentation.py"), encoding="utf-8") as f:
        used = set(re.findall(r"self\.ui\.(\w+)", f.read()))
    assert not (used - names), f"widgets used but missing in the .ui: {sorted(used - names)}"


@pytest.mark.parametrize("module", MODULES)
def test_module_python_files_compile(module):
    """The Qt-side files cannot be imported outside Slicer; at least they must compile on this Python."""
    module_dir = os.path.join(REPO, module)
    assert os.path.isdir(module_dir), f"module folder {module} is missing"
    for rel in sorted(p for p in _files(module_dir) if p.endswith(".py")):
        with open(os.path.join(module_dir, rel), encoding="utf-8") as f:
            compile(f.read(), rel, "exec")


def test_dependency_check_matches_pyproject():
    """The packages the Slicer module checks/installs are the engine's runtime dependencies."""
    import sys

    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    sys.path.insert(0, os.path.join(REPO, "LightUNETRSegmentation"))
    # environment.py does not import slicer at module level (no slicer import here: see docs/slicer.md)
    from LightUNETRSlicerLib.environment import REQUIREMENTS

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    parsed = {}
    for dep in deps:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", dep)
        parsed[m.group(1).lower()] = m.group(2).replace(" ", "")
    assert {k.lower(): v for k, v in REQUIREMENTS.items()} == parsed
