"""Render a figure of the demo's test segmentations (the extension's screenshot in CMakeLists.txt).

    python tools/render_demo_figure.py demo_output [-o docs/images/LightUNETRSegmentation.png]

For one held-out case it shows the axial slice with the most organ voxels three times: ground truth,
CSE and supervised-only segmentation, as coloured outlines on the image (all resampled to RAS display
orientation without interpolation).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]


def _png_writer():
    spec = importlib.util.spec_from_file_location("make_icons", REPO / "tests" / "slicer_scene" / "make_icons.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_png


def _axial(image: sitk.Image) -> np.ndarray:
    """[z, y, x] array of the image reoriented to RAS-like display axes (rows anterior→posterior)."""
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def render(demo_dir: Path, output: Path, scale: int = 4) -> Path:
    manifest = json.loads((demo_dir / "data" / "dataset.json").read_text())
    tests = [c for c in manifest["cases"] if c["role"] == "test"]
    case = tests[0]
    image = _axial(sitk.ReadImage(str(demo_dir / "data" / case["images"][0])))
    truth = _axial(sitk.ReadImage(str(demo_dir / "data" / case["label"]))) > 0
    panels = []
    z = int(np.argmax(truth.sum(axis=(1, 2))))
    lo, hi = np.percentile(image[z], [1, 99])
    gray = np.clip((image[z] - lo) / max(hi - lo, 1e-6), 0, 1)
    colours = {"truth": (0.2, 0.9, 0.3), "cse": (1.0, 0.35, 0.3), "supervised": (0.3, 0.6, 1.0)}
    for name in ("truth", "cse", "supervised"):
        if name == "truth":
            mask = truth[z]
        else:
            seg = sitk.ReadImage(str(demo_dir / "segmentations" / name / f"{case['id']}.nii.gz"))
            mask = _axial(seg)[z] > 0
        rgb = np.repeat(gray[..., None], 3, axis=2)
        rgb[mask] = 0.6 * rgb[mask] + 0.4 * np.asarray(colours[name])
        rgb[_outline(mask)] = colours[name]
        panels.append(np.kron(rgb, np.ones((scale, scale, 1))))
        panels.append(np.ones((panels[-1].shape[0], 2 * scale, 3)))
    rgb = np.concatenate(panels[:-1], axis=1)
    rgba = np.concatenate([rgb, np.ones(rgb.shape[:2] + (1,))], axis=2)
    output.parent.mkdir(parents=True, exist_ok=True)
    _png_writer()(str(output), np.clip(np.rint(rgba * 255), 0, 255).astype(np.uint8))
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "images" / "LightUNETRSegmentation.png")
    args = parser.parse_args()
    print(render(args.demo_dir, args.output))


if __name__ == "__main__":
    main()
