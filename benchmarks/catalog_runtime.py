#!/usr/bin/env python
"""Expected run time of each catalog model, end to end (read → segment → write), as a user will see it.

For every catalog entry, a network of the entry's architecture and patch size (random weights: the time of a
forward pass does not depend on them) is saved as a bundle with the preset's spacing and normalisation, and
a synthetic volume of the size of the region the model expects (``VOLUMES``: the crop the authors' data uses)
is segmented with ``lightunetr_core.inference.segment_image`` with the default settings (overlap 0.5, the
default backend). The median of ``--repeats`` runs goes into the catalog's ``runtime`` (``--write``), with the
machine it was measured on; the command line and the Slicer module show it before a download.

    python benchmarks/catalog_runtime.py --threads 2 --write      # CPU figures into catalog.json
    python benchmarks/catalog_runtime.py --device cuda --write    # GPU figures (on a GPU machine)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: (size in voxels x, y, z; spacing mm) of the region each preset's model is meant for.
VOLUMES = {
    "la": ((160, 160, 88), (0.625, 0.625, 0.625)),  # LA 2018 crops: about 10-20 voxels around the atrium, full z
    "pancreas": ((160, 140, 110), (0.8, 0.8, 1.0)),  # Pancreas-CT: 25 mm around the pancreas
    "brats": ((150, 180, 140), (1.0, 1.0, 1.0)),  # BraTS: the brain's bounding box
}


def _bundle(folder: Path, preset: str):
    import torch

    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle
    from lightunetr_core.catalog.reference import PRESETS, _normalization
    from lightunetr_core.data.preprocessing import PreprocessingPlan
    from lightunetr_core.models import build_model

    s = PRESETS[preset]
    args = {"in_channels": 1, "num_classes": 2, "patch_size": list(s["patch_size"])}
    torch.manual_seed(0)
    plan = PreprocessingPlan(target_spacing=tuple(s["spacing"]), normalization=[_normalization(s["normalization"], s.get("ct_window"))])
    card = ModelCard(name=preset, architecture=s["variant"], architecture_args=args, patch_size=list(s["patch_size"]),
                     preprocessing=plan.to_dict(), input_channels=list(s["modality"]), labels=default_labels(s["labels"]))
    return save_bundle(folder / preset, build_model(s["variant"], **args).eval(), card)


def measure(preset: str, device: str, repeats: int, folder: Path) -> float:
    import SimpleITK as sitk

    from lightunetr_core.bundle import load_bundle
    from lightunetr_core.data.io import read_image, write_image
    from lightunetr_core.inference import segment_image

    size, spacing = VOLUMES[preset]
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(100, 30, size[::-1]).astype(np.int16))
    image.SetSpacing(spacing)
    path = folder / f"{preset}.nii.gz"
    sitk.WriteImage(image, str(path))
    bundle = load_bundle(_bundle(folder, preset), device=device)
    times = []
    for n in range(repeats + 1):  # the first run exports/warms up the backend and is not counted
        t = time.perf_counter()
        result = segment_image(bundle, read_image(path), device=device)
        write_image(result.labels, folder / f"{preset}_seg.nii.gz", overwrite=True)
        if n:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", choices=sorted(VOLUMES), default=sorted(VOLUMES),
                        help="measure only these presets (--write needs all of them)")
    parser.add_argument("--write", action="store_true", help="put the figures into lightunetr_core/catalog/catalog.json")
    args = parser.parse_args(argv)
    if args.write and sorted(args.presets) != sorted(VOLUMES):
        parser.error("--write measures every preset: leave out --presets")
    import torch

    from lightunetr_core.catalog.catalog import CATALOG_FILE, load_catalog

    if args.threads:
        torch.set_num_threads(args.threads)
    key = "gpu_s" if args.device.startswith("cuda") else "cpu_s"
    machine = (torch.cuda.get_device_name(0) if key == "gpu_s" else
               f"{platform.processor() or platform.machine()}, {args.threads or torch.get_num_threads()} CPU thread(s)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in sorted({e.preset for e in load_catalog().values()} & set(args.presets)):
            results[preset] = measure(preset, args.device, args.repeats, Path(tmp))
            print(f"{preset}: {results[preset]:.2f} s ({VOLUMES[preset][0]} voxels, {machine})", file=sys.stderr)
    print(json.dumps({"device": args.device, "machine": machine, "seconds": results}))
    if args.write:
        data = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))
        for entry in data["models"]:
            size, spacing = VOLUMES[entry["preset"]]
            runtime = entry.setdefault("runtime", {})
            runtime[key] = round(results[entry["preset"]], 1)
            runtime["volume"] = f"{'x'.join(map(str, size))} voxels of {'x'.join(map(str, spacing))} mm"
            runtime[f"{key[:3]}_measured_on"] = f"{machine}, {time.strftime('%Y-%m-%d')}"
            runtime["measured_on"] = "; ".join(v for k, v in sorted(runtime.items()) if k.endswith("_measured_on"))
            runtime.setdefault("gpu_s", None)
        CATALOG_FILE.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
