#!/usr/bin/env python
"""Whole-volume segmentation time of Light-UNETR vs MONAI SegResNet in the same pipeline.

For each volume size a synthetic CT (int16 HU, an ellipsoid "organ" in noisy soft tissue) with
``--input-spacing`` mm voxels is written as NIfTI, then segmented end to end with the project's
pipeline (``lightunetr_core.data.io.read_image`` → ``lightunetr_core.inference.segment_image`` →
``lightunetr_core.data.io.write_image``), split into

* ``read_s``        reading the NIfTI file,
* ``preprocess_s``  RAS reorientation, resampling to the model spacing, CT window normalisation,
* ``model_s``       sliding-window inference (all windows, blending, softmax),
* ``postprocess_s`` probabilities back to the input grid, argmax (optionally largest component),
* ``write_s``       writing the label map (compressed NIfTI, atomic).

Both networks get the same bundle card (patch, spacing, normalisation), so only the network
differs. Weights are random: the time of a forward pass does not depend on them. The ratio
``SegResNet / Light-UNETR`` > 1 means Light-UNETR is faster.

``--backends torch onnxruntime`` runs Light-UNETR through both inference backends of
``segment_image`` (ONNX Runtime on the CPU only; the export is done, cached and warmed up before
timing) and prints the ratio torch / onnxruntime. ``--onnx`` additionally times one window through PyTorch and through ONNX Runtime (CPU) after
exporting Light-UNETR with :func:`lightunetr_core.export.onnx.export_onnx`.

Examples::

    python benchmarks/segmentation_benchmark.py                        # 128³ and 256×256×160, CPU (+GPU)
    python benchmarks/segmentation_benchmark.py --large --json out.json  # also 512×512×300
    python benchmarks/segmentation_benchmark.py --reduced --onnx        # quick run (1 repeat, 128³ + 256×256×160)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"128": (128, 128, 128), "256": (256, 256, 160)}
LARGE = (512, 512, 300)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["128", "256"],
                   help="volume sizes: 128, 256 or XxYxZ (default 128 256 = 128³ and 256×256×160)")
    p.add_argument("--large", action="store_true", help="also 512×512×300 (CT at 0.8 mm)")
    p.add_argument("--input-spacing", type=float, nargs=3, default=(0.8, 0.8, 0.8), help="input voxel size (mm)")
    p.add_argument("--model-spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0),
                   help="model spacing (mm); the pipeline resamples to it (Pancreas-CT recipe: 1 mm)")
    p.add_argument("--patch", type=int, nargs=3, default=(96, 96, 96), help="model patch size (multiples of 16)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    p.add_argument("--sw-batch-size", type=int, default=1)
    p.add_argument("--models", nargs="+", default=["lightunetr", "segresnet"], choices=["lightunetr", "segresnet"])
    p.add_argument("--segresnet-filters", type=int, default=8,
                   help="SegResNet init_filters (MONAI default 8: about as many parameters as Light-UNETR; tutorials use 16)")
    p.add_argument("--backends", nargs="+", default=["torch"], choices=["torch", "onnxruntime"],
                   help="inference backends of segment_image for Light-UNETR (SegResNet always runs on torch)")
    p.add_argument("--compare-postprocess", action="store_true",
                   help="also time the label map back on the input grid: full per-class resampling "
                        "(PreprocessedCase.argmax_on_original_grid) vs boundary-only (labels_on_original_grid), "
                        "on the network's real probabilities (one more network pass per size)")
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per setting (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed network calls before timing")
    p.add_argument("--reduced", action="store_true", help="quick settings: 1 repeat, no GPU unless asked")
    p.add_argument("--onnx", action="store_true", help="also compare ONNX Runtime with PyTorch on one window")
    p.add_argument("--onnx-repeats", type=int, default=5)
    p.add_argument("--json", dest="json_path", help="write all results as JSON")
    return p.parse_args(argv)


def _size(text: str) -> tuple[int, int, int]:
    if text in SIZES:
        return SIZES[text]
    parts = [int(v) for v in text.lower().replace("×", "x").split("x")]
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise SystemExit(f"bad size {text!r}: use 128, 256 or XxYxZ")
    return tuple(parts)


def synthetic_ct(size_xyz, spacing, seed=0):
    """int16 HU volume: air outside a body ellipse, soft tissue with noise, a brighter organ."""
    import numpy as np
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    nx, ny, nz = size_xyz
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in (nz, ny, nx)), indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 <= 1.0
    organ = ((x - 0.2) / 0.25) ** 2 + ((y + 0.1) / 0.2) ** 2 + (z / 0.4) ** 2 <= 1.0
    hu = np.full((nz, ny, nx), -1000, np.float32)
    hu[body] = 40
    hu[organ] = 120
    hu += rng.normal(0, 20, hu.shape).astype(np.float32)
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin((-nx * spacing[0] / 2, -ny * spacing[1] / 2, -nz * spacing[2] / 2))
    return image


def make_card(patch, model_spacing, architecture, architecture_args):
    from lightunetr_core.bundle import ModelCard, default_labels
    from lightunetr_core.data.preprocessing import IntensityNormalization, PreprocessingPlan

    plan = PreprocessingPlan(target_spacing=tuple(model_spacing),
                             normalization=[IntensityNormalization(kind="ct", window=(-125.0, 275.0))])
    return ModelCard(
        name=f"benchmark-{architecture}", architecture=architecture, architecture_args=architecture_args,
        patch_size=list(patch), preprocessing=plan.to_dict(), input_channels=["CT"],
        labels=default_labels(["background", "organ"]),
    )


def build(name, patch, model_spacing, segresnet_filters):
    """(LoadedBundle, parameter count) for a network with random weights."""
    import torch
    from monai.networks.nets import SegResNet

    from lightunetr_core.bundle import LoadedBundle
    from lightunetr_core.models import LightUNETR

    torch.manual_seed(0)
    if name == "lightunetr":
        args = {"in_channels": 1, "num_classes": 2, "patch_size": list(patch)}
        model = LightUNETR(**args)
        card = make_card(patch, model_spacing, "lightunetr", args)
    else:
        model = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=segresnet_filters)
        # The card is only used for patch size and preprocessing; SegResNet is not a bundle architecture.
        card = make_card(patch, model_spacing, "lightunetr", {"in_channels": 1, "num_classes": 2})
    model.eval()
    return LoadedBundle(model=model, card=card, path=Path(f"<{name}>")), sum(p.numel() for p in model.parameters())


def run_case(bundle, path, out_path, device, overlap, sw_batch_size, backend="torch"):
    import torch

    from lightunetr_core.data.io import read_image, write_image
    from lightunetr_core.inference import segment_image
    from lightunetr_core.inference.sliding import count_windows

    t0 = time.perf_counter()
    image = read_image(path)
    read_s = time.perf_counter() - t0
    windows = {}

    def progress(done, total):
        windows["batches"] = total

    result = segment_image(bundle, [image], overlap=overlap, sw_batch_size=sw_batch_size, device=device,
                           backend=backend, progress=progress)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    write_image(result.labels, out_path, overwrite=True)
    write_s = time.perf_counter() - t1
    timing = {
        "read_s": read_s,
        "preprocess_s": result.timings.get("preprocess_s", float("nan")),
        "model_s": result.timings.get("inference_s", float("nan")),
        "postprocess_s": result.timings.get("postprocess_s", float("nan")),
        "write_s": write_s,
    }
    timing["total_s"] = sum(timing.values())
    timing["windows"] = windows.get("batches", 0) * sw_batch_size
    return timing


def postprocess_comparison(bundle, path, overlap, backend):
    """Seconds for the two ways of putting the label map on the input grid, and their agreement."""
    import numpy as np
    import torch

    from lightunetr_core.data.io import read_image
    from lightunetr_core.data.preprocessing import preprocess_case
    from lightunetr_core.inference.backends import onnxruntime_predictor
    from lightunetr_core.inference.input_grid import labels_on_original_grid
    from lightunetr_core.inference.sliding import predict_probabilities

    case = preprocess_case([read_image(path)], bundle.card.plan)
    network = onnxruntime_predictor(bundle, threads=torch.get_num_threads()) if backend == "onnxruntime" else bundle.model
    probs = predict_probabilities(network, torch.from_numpy(case.image), bundle.card.patch_size, overlap=overlap,
                                  device=torch.device("cpu")).numpy()
    t = time.perf_counter()
    full = case.argmax_on_original_grid(probs)
    full_s = time.perf_counter() - t
    t = time.perf_counter()
    fast = labels_on_original_grid(case, probs)
    fast_s = time.perf_counter() - t
    return {"full_resampling_s": full_s, "boundary_only_s": fast_s, "full_over_boundary_only": full_s / fast_s,
            "differing_voxels": int(np.count_nonzero(full != fast)), "voxels": int(full.size),
            "foreground_fraction": float(np.mean(full > 0))}


def onnx_comparison(patch, threads, repeats):
    """Median seconds per window: PyTorch vs ONNX Runtime (CPU), same Light-UNETR, same input."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from lightunetr_core.export.onnx import export_onnx
    from lightunetr_core.models import LightUNETR

    torch.manual_seed(0)
    model = LightUNETR(1, 2, patch_size=tuple(patch)).eval()
    x = torch.randn(1, 1, *patch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        report = export_onnx(model, path, tuple(x.shape))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"image": x.numpy()}
        session.run(None, feed)
        ort_times = []
        for _ in range(repeats):
            t = time.perf_counter()
            session.run(None, feed)
            ort_times.append(time.perf_counter() - t)
    torch_times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            torch_times.append(time.perf_counter() - t)
    torch_s, ort_s = statistics.median(torch_times), statistics.median(ort_times)
    return {"patch": list(patch), "threads": threads, "torch_s": torch_s, "onnxruntime_s": ort_s,
            "torch_over_ort": torch_s / ort_s, "export_check_max_abs_diff": report.max_abs_diff,
            "torch_times": torch_times, "ort_times": ort_times, "onnxruntime": ort.__version__}


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np  # noqa: F401
    import SimpleITK as sitk
    import torch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    repeats = 1 if args.reduced else args.repeats
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.reduced else []))
    sizes = [_size(s) for s in args.sizes] + ([LARGE] if args.large else [])
    machine = {
        "platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "torch_threads": threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print(f"# machine: {machine}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="lightunetr-bench-") as tmp:
        tmp = Path(tmp)
        for size in sizes:
            path = tmp / f"ct_{'x'.join(map(str, size))}.nii.gz"
            sitk.WriteImage(synthetic_ct(size, args.input_spacing), str(path), True)
            for device in devices:
                for name in args.models:
                    for backend in (args.backends if name == "lightunetr" else ["torch"]):
                        if backend == "onnxruntime" and device != "cpu":
                            continue
                        bundle, n_params = build(name, args.patch, args.model_spacing, args.segresnet_filters)
                        bundle.model.to(device)
                        with torch.inference_mode():  # warm-up: allocator, kernels, MONAI imports
                            for _ in range(args.warmup):
                                bundle.model(torch.zeros(1, 1, *args.patch, device=device))
                        setup_s = None
                        if backend == "onnxruntime":  # export once (cached), open the session, one window
                            from lightunetr_core.inference.backends import onnxruntime_predictor

                            t = time.perf_counter()
                            predictor = onnxruntime_predictor(bundle, threads=torch.get_num_threads())
                            setup_s = time.perf_counter() - t
                            for _ in range(args.warmup):
                                predictor(torch.zeros(1, 1, *args.patch))
                        runs = [run_case(bundle, path, tmp / "labels.nii.gz", device, args.overlap,
                                         args.sw_batch_size, backend) for _ in range(repeats)]
                        row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                        row.update(size=list(size), device=device, model=name, backend=backend, parameters=n_params,
                                   repeats=repeats, runs=runs, backend_setup_first_s=setup_s)
                        if args.compare_postprocess and name == "lightunetr" and backend == args.backends[-1]:
                            row["postprocess_comparison"] = cmp = postprocess_comparison(bundle, path, args.overlap,
                                                                                         backend)
                            print(f"  label map on the input grid: full per-class resampling {cmp['full_resampling_s']:.2f} s, "
                                  f"boundary-only {cmp['boundary_only_s']:.2f} s ({cmp['full_over_boundary_only']:.1f}x), "
                                  f"{cmp['differing_voxels']} of {cmp['voxels']} voxels differ, "
                                  f"foreground {cmp['foreground_fraction']:.3f}", flush=True)
                        results.append(row)
                        print(f"{'x'.join(map(str, size)):>12} {device:>4} {name:>10} {backend:>11}  "
                              f"read {row['read_s']:6.2f}  pre {row['preprocess_s']:6.2f}  model {row['model_s']:7.2f}  "
                              f"post {row['postprocess_s']:6.2f}  write {row['write_s']:5.2f}  "
                              f"total {row['total_s']:7.2f} s  ({row['windows']} windows)"
                              + (f"  [first export+session {setup_s:.1f} s]" if setup_s is not None else ""), flush=True)
    ratios = []
    for row in results:
        if row["model"] != "lightunetr" or row["backend"] != "torch":
            continue
        other = [r for r in results if r["model"] == "segresnet" and r["size"] == row["size"]
                 and r["device"] == row["device"]]
        if other:
            ratio = {"size": row["size"], "device": row["device"],
                     "segresnet_over_lightunetr_total": other[0]["total_s"] / row["total_s"],
                     "segresnet_over_lightunetr_model": other[0]["model_s"] / row["model_s"]}
            ratios.append(ratio)
            print(f"ratio SegResNet/Light-UNETR {'x'.join(map(str, row['size']))} {row['device']}: "
                  f"total {ratio['segresnet_over_lightunetr_total']:.2f}, model {ratio['segresnet_over_lightunetr_model']:.2f}")
        ort = [r for r in results if r["model"] == "lightunetr" and r["backend"] == "onnxruntime"
               and r["size"] == row["size"] and r["device"] == row["device"]]
        if ort:
            ratio = {"size": row["size"], "device": row["device"],
                     "torch_over_onnxruntime_total": row["total_s"] / ort[0]["total_s"],
                     "torch_over_onnxruntime_model": row["model_s"] / ort[0]["model_s"]}
            ratios.append(ratio)
            print(f"ratio torch/onnxruntime backend {'x'.join(map(str, row['size']))} {row['device']}: "
                  f"total {ratio['torch_over_onnxruntime_total']:.2f}, model {ratio['torch_over_onnxruntime_model']:.2f}")
    onnx = None
    if args.onnx:
        onnx = onnx_comparison(args.patch, threads, args.onnx_repeats)
        print(f"ONNX window {tuple(args.patch)}: torch {onnx['torch_s']:.2f} s, onnxruntime {onnx['onnxruntime_s']:.2f} s, "
              f"torch/ORT = {onnx['torch_over_ort']:.2f}", flush=True)
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report = {"machine": machine, "settings": {k: v for k, v in vars(args).items()}, "results": results,
              "ratios": ratios, "onnx": onnx}
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
