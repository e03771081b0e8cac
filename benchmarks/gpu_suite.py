#!/usr/bin/env python
"""One-shot GPU suite: every CUDA path of LightUNETR measured and checked on one GPU, in minutes.

    bash benchmarks/gpu_suite.sh                      # a bare GPU machine: installs the project, then runs this
    python benchmarks/gpu_suite.py --out gpu-results  # results: gpu-results/gpu_suite.json and gpu_suite.md
    python benchmarks/gpu_suite.py --dry-run --out d  # CPU, tiny sizes, the same code up to the device calls

Sections (each timed against its baseline in the same process; ``--only`` picks some):

``inference``      windows/s of Light-UNETR at 112x112x80, batch 1 and 8, fp32 and bf16 autocast, eager and
                   replayed as a CUDA graph (``models.accelerate.CUDAGraphRunner``); the graph's output must equal
                   eager within 1e-5 relative; MONAI SegResNet (init_filters 8) at the same batches.
``whole_volume``   a 512x512x300 CT at 0.8 mm read → segmented with the default settings → written, split by stage.
``cse_step``       one cse-reference step (112x112x80, 2 labelled + 2 unlabelled): time, peak memory, and the
                   losses of the same step run twice from the same state (CUDA's atomics may differ in the last bits).
``resume``         a Trainer stopped after k iterations and resumed equals the uninterrupted run (max |Δweight|).
``train_cli``      ``lightunetr train`` fp32 vs --bf16 (it/s, final loss), and under torchrun (NCCL on CUDA).
``oom``            ``segment`` with a per-process memory fraction too small for its window batch falls back (smaller
                   batch, then the CPU) with a message and the same labels; ``train`` refuses a step that does not fit
                   with a message naming the memory (on the dry run: the CPU allocator under an address-space cap).
``catalog``        the end-to-end time of each catalog preset (``benchmarks/catalog_runtime.py``); ``--write-catalog``
                   stores them as the catalog's GPU run times.

The JSON holds every figure and check with the GPU, driver, torch/CUDA versions and date; the markdown
table puts the figures beside the goals of the GPU issue. Exit status 1 when a correctness check fails
(timings against goals are reported, not enforced).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # catalog_runtime's bundle and volume helpers

#: Full sizes (GPU) and dry-run sizes (CPU, seconds in all).
SIZES = {
    False: {"patch": (112, 112, 80), "batches": (1, 8), "warmup": 5, "repeats": 30, "volume": (512, 512, 300),
            "spacing": (0.8, 0.8, 0.8), "steps": 10, "train_patch": (64, 64, 64), "train_iterations": 40,
            "oom_volume": (512, 512, 300)},
    True: {"patch": (32, 32, 32), "batches": (1, 2), "warmup": 1, "repeats": 2, "volume": (48, 48, 32),
           "spacing": (2.0, 2.0, 2.0), "steps": 2, "train_patch": (32, 32, 32), "train_iterations": 2,
           "oom_volume": (48, 48, 32)},
}
GOALS = {  # the GPU issue's targets, shown beside the measured figures
    "graph_windows_per_s_batch8": ">= 1000",
    "graph_ms_batch1": "<= 6",
    "ratio_to_segresnet_batch8": ">= 2.5",
    "whole_volume_s": "< 2",
    "cse_step_ms": "<= 120",
    "cse_step_peak_gib": "<= 1.3",
}


# ------------------------------------------------------------------------------------------------ helpers
def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def environment(device) -> dict:
    import torch

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "machine": platform.machine(), "cpu_threads": torch.get_num_threads(), "device": str(device)}
    try:
        import monai

        env["monai"] = monai.__version__
    except ImportError:
        env["monai"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, encoding="utf-8", errors="replace", timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            env["driver"] = None
    return env


# ------------------------------------------------------------------------------------------------ sections
def section_inference(device, size) -> dict:
    import torch
    from monai.networks.nets import SegResNet

    from lightunetr_core.models import LightUNETR
    from lightunetr_core.models.accelerate import CUDAGraphRunner

    torch.manual_seed(0)
    patch = size["patch"]
    nets = {"lightunetr": LightUNETR(patch_size=patch).to(device).eval(),
            "segresnet": SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8).to(device).eval()}
    out, checks = {"patch": list(patch), "rows": []}, {}
    for batch in size["batches"]:
        x = torch.randn(batch, 1, *patch, device=device)
        with torch.no_grad():
            eager = nets["lightunetr"](x)
        variants = {"lightunetr eager fp32": lambda: nets["lightunetr"](x),
                    "segresnet eager fp32": lambda: nets["segresnet"](x)}
        if device.type == "cuda":
            graph = CUDAGraphRunner(nets["lightunetr"], x.shape)
            replay = graph(x)
            rel = float(((replay - eager).abs().max() / eager.abs().max().clamp_min(1e-12)).item())
            out[f"graph_max_rel_diff_batch{batch}"] = rel
            checks[f"graph equals eager (batch {batch}, <= 1e-5 rel)"] = rel <= 1e-5
            graph_bf16 = CUDAGraphRunner(nets["lightunetr"], x.shape, autocast_dtype=torch.bfloat16)
            variants.update({"lightunetr graph fp32": lambda: graph(x), "lightunetr graph bf16": lambda: graph_bf16(x)})

            def bf16_eager():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return nets["lightunetr"](x)

            variants["lightunetr eager bf16"] = bf16_eager
        with torch.no_grad():
            for name, fn in variants.items():
                times = _timed(fn, device, size["warmup"], size["repeats"])
                median = statistics.median(times)
                out["rows"].append({"name": name, "batch": batch, "median_ms": median * 1e3,
                                    "windows_per_s": batch / median})
    rows = {(r["name"], r["batch"]): r for r in out["rows"]}
    big = max(size["batches"])
    best = "lightunetr graph fp32" if device.type == "cuda" else "lightunetr eager fp32"
    out["windows_per_s_batch8"] = rows[(best, big)]["windows_per_s"]
    out["ms_batch1"] = rows[(best, 1)]["median_ms"]
    out["ratio_to_segresnet_batch8"] = rows[(best, big)]["windows_per_s"] / rows[("segresnet eager fp32", big)]["windows_per_s"]
    if device.type == "cuda":
        out["graph_windows_per_s_batch8"], out["graph_ms_batch1"] = out["windows_per_s_batch8"], out["ms_batch1"]
    return {"figures": out, "checks": checks}


def _synthetic_ct(path: Path, shape, spacing) -> None:
    """A CT-like volume (air, body, organs) written as the Slicer module writes its input (uncompressed NRRD)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape[::-1]], indexing="ij")
    body = (x**2 + (1.3 * y) ** 2) < 0.8
    organ = ((x - 0.2) ** 2 + y**2 + (z * 0.8) ** 2) < 0.1
    array = np.where(body, 40, -1000).astype(np.int16) + np.where(organ, 60, 0).astype(np.int16)
    array += rng.normal(0, 15, array.shape).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(image, str(path), False)


def section_whole_volume(device, size, work: Path) -> dict:
    from catalog_runtime import _bundle

    from lightunetr_core.bundle import load_bundle
    from lightunetr_core.data.io import read_image, write_image
    from lightunetr_core.inference import segment_image

    path = work / "ct.nrrd"
    _synthetic_ct(path, size["volume"], size["spacing"])
    bundle = load_bundle(_bundle(work, "pancreas"), device=str(device))
    runs = []
    for _ in range(2):  # the first run warms up cuDNN / the ONNX export; the second is reported
        t0 = time.perf_counter()
        image = read_image(path)
        t1 = time.perf_counter()
        result = segment_image(bundle, image, device=str(device))
        t2 = time.perf_counter()
        write_image(result.labels, work / "ct_seg.nii.gz", overwrite=True)
        t3 = time.perf_counter()
        runs.append({"read_s": t1 - t0, **{k: v for k, v in result.timings.items()}, "segment_s": t2 - t1,
                     "write_s": t3 - t2, "whole_volume_s": t3 - t0, "backend": result.backend, "device": result.device})
    figures = {"volume": list(size["volume"]), "spacing_mm": list(size["spacing"]), **runs[-1],
               "first_run_s": runs[0]["whole_volume_s"]}
    return {"figures": figures, "checks": {}}


def _cse_setup(device, patch, lean=False, bf16=False, seed=0):
    import torch
    from cse_step_benchmark import random_batch

    from lightunetr_core.models import LightUNETR
    from lightunetr_core.training.recipes import RecipeConfig, make_thresholds

    torch.manual_seed(seed)
    model = LightUNETR(patch_size=patch).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    labeled, unlabeled = random_batch(patch, device, torch.Generator().manual_seed(1))
    config = RecipeConfig("reference", lean=lean, bf16=bf16)
    return model, optimizer, labeled, unlabeled, config, make_thresholds(config, 2, patch, device)


def section_cse_step(device, size) -> dict:
    import torch

    from lightunetr_core.training.recipes import training_step

    patch = size["patch"]
    rows = []
    for name, lean, bf16 in (("cse-reference fp32", False, False), ("cse-reference --lean", True, False),
                             ("cse-reference --bf16", False, True)):
        model, optimizer, labeled, unlabeled, config, thresholds = _cse_setup(device, patch, lean, bf16)
        g = torch.Generator().manual_seed(2)

        def step():
            optimizer.zero_grad(set_to_none=True)
            result = training_step(model, labeled, unlabeled, config, thresholds, g)
            result.loss.backward()
            optimizer.step()

        for _ in range(size["warmup"]):
            step()
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = _timed(step, device, 0, size["steps"])
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        rows.append({"name": name, "median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
                     "peak_gib": peak})
    # The same step twice from the same state and generator: equal losses (bit-level on CPU; CUDA's atomic
    # adds in backward convolutions may differ in the last bits).
    losses = []
    for _ in range(2):
        model, optimizer, labeled, unlabeled, config, thresholds = _cse_setup(device, patch)
        g = torch.Generator().manual_seed(3)
        terms = []
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            result = training_step(model, labeled, unlabeled, config, thresholds, g)
            result.loss.backward()
            optimizer.step()
            terms.append({k: float(v) for k, v in result.terms.items()})
        losses.append(terms)
    diff = max(abs(a[k] - b[k]) for a, b in zip(*losses) for k in a)
    figures = {"patch": list(patch), "batch": "2 + 2", "rows": rows, "cse_step_ms": rows[0]["median_ms"],
               "cse_step_peak_gib": rows[0]["peak_gib"], "repeat_max_loss_diff": diff,
               "repeat_bit_identical": diff == 0.0}
    return {"figures": figures, "checks": {"the same step twice gives the same losses (<= 1e-4)": diff <= 1e-4}}


def _demo_data(work: Path) -> Path:
    from lightunetr_core.data.demo import generate_demo_dataset

    folder = work / "demo"
    if not (folder / "dataset.json").exists():
        generate_demo_dataset(folder, cases=6, labeled=2, validation=1, test=0, shape=(64, 64, 48),
                              spacing=(1.5, 1.5, 2.5))
    return folder


def section_resume(device, size, work: Path) -> dict:
    from lightunetr_core.data.cache import prepare_dataset
    from lightunetr_core.data.sampling import PatchSampler
    from lightunetr_core.training.recipes import RecipeConfig
    from lightunetr_core.training.trainer import TrainConfig, Trainer, TrainingData

    patch = size["train_patch"]
    prepared = prepare_dataset(_demo_data(work), work / "resume-cache", labeled_batch_size=2, unlabeled_batch_size=2,
                               require_unlabeled=True)

    def trainer(run_dir, **kw):
        data = TrainingData(make_sampler=lambda g: PatchSampler(prepared, patch, g, foreground_oversample=0.33),
                            validation=[], in_channels=prepared.in_channels, num_classes=prepared.num_classes,
                            labeled_count=len(prepared.labeled), unlabeled_count=len(prepared.unlabeled))
        config = TrainConfig(run_dir=run_dir, recipe=RecipeConfig("reference"), architecture="lightunetr",
                             in_channels=1, num_classes=prepared.num_classes,
                             patch_size=patch, iterations=4, val_every=0, seed=11, device=str(device), warmup=2, **kw)
        return Trainer(config, data)

    full = trainer(work / "resume-full")
    full.run()
    trainer(work / "resume-split", stop_after=2).run()
    resumed = trainer(work / "resume-split", resume=True)
    resumed.run()
    a, b = full.model_plain.state_dict(), resumed.model_plain.state_dict()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return {"figures": {"iterations": 4, "stopped_after": 2, "max_abs_weight_diff": diff, "bit_identical": diff == 0.0},
            "checks": {"resume equals the uninterrupted run (<= 1e-4; bit-exact on CPU)":
                       diff == 0.0 if device.type == "cpu" else diff <= 1e-4}}


def _train_cli(work: Path, name: str, device, size, *extra, torchrun=False) -> dict:
    run = work / f"train-{name}"
    args = ["train", "--data", str(_demo_data(work)), "-o", str(run), "--recipe", "cse-reference",
            "--iterations", str(size["train_iterations"]), "--patch-size", *map(str, size["train_patch"]),
            "--batch-labeled", "2", "--batch-unlabeled", "2", "--val-every", "0", "--device", device.type,
            "--events", "json", *extra]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               "-m", "lightunetr_core.cli.train", *args[1:]]
    else:
        cmd = [sys.executable, "-m", "lightunetr_core", *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=900, env=os.environ)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    finished = next((e for e in events if e.get("event") == "finished"), {})
    progress = [e for e in events if e.get("event") == "progress" and e.get("iteration")]
    return {"name": name, "exit": proc.returncode, "wall_s": time.perf_counter() - t,
            "it_per_s": progress[-1].get("it_per_s") if progress else None,
            "final_loss": (progress[-1].get("loss") or {}).get("total") if progress else None,
            "world_size": finished.get("world_size"), "ranks_in_sync": finished.get("ranks_in_sync"),
            "error": None if proc.returncode == 0 else (proc.stderr or proc.stdout)[-1500:]}


def section_train_cli(device, size, work: Path) -> dict:
    rows = [_train_cli(work, "fp32", device, size), _train_cli(work, "bf16", device, size, "--bf16"),
            _train_cli(work, "torchrun", device, size, torchrun=True)]
    checks = {f"lightunetr train {r['name']} finishes": r["exit"] == 0 for r in rows}
    checks["torchrun ranks in sync"] = rows[2]["ranks_in_sync"] is True
    return {"figures": {"patch": list(size["train_patch"]), "iterations": size["train_iterations"], "rows": rows,
                        "backend": "nccl" if device.type == "cuda" else "gloo"}, "checks": checks}


#: Run in a child process: a per-process CUDA memory fraction (or, on the CPU dry run, an address-space cap)
#: cannot be lifted again in the same process.
_OOM_CHILD = r"""
import json, resource, sys, torch
mode, device, volume, bundle, fraction_or_mb, *rest = sys.argv[1:]  # cap: GiB of GPU memory / MiB of address space
from lightunetr_core.bundle import load_bundle
from lightunetr_core.data.io import read_image
from lightunetr_core.inference import segment_image
import lightunetr_core.cli.train, lightunetr_core.training.trainer, monai.transforms  # noqa: F401 (before a cap)
def cap():
    if device == "cuda":  # the same absolute budget on any GPU
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(float(fraction_or_mb) * 2**30 / total)
    else:  # oneDNN would report the failed allocation as "could not create a primitive": the allocator's own error instead
        torch.backends.mkldnn.enabled = False
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + int(fraction_or_mb) * 2**20, resource.RLIM_INFINITY))
if mode == "segment":
    b = load_bundle(bundle, device=device); image = read_image(volume)
    cap()
    r = segment_image(b, image, device=device, sw_batch_size=int(rest[0]), backend="torch")
    import SimpleITK as sitk
    sitk.WriteImage(r.labels, rest[1])
    print("RESULT " + json.dumps({"messages": r.messages, "device": r.device}))
else:
    from lightunetr_core.cli import build_parser
    args = build_parser().parse_args(rest)
    cap()
    sys.exit(args.func(args))
"""


def section_oom(device, size, work: Path) -> dict:
    import SimpleITK as sitk
    from catalog_runtime import _bundle

    from lightunetr_core.bundle import load_bundle
    from lightunetr_core.data.io import read_image
    from lightunetr_core.inference import segment_image

    if device.type == "cpu" and not sys.platform.startswith("linux"):
        return {"figures": {"skipped": "the CPU dry run caps the address space through /proc (Linux)"}, "checks": {}}
    figures, checks = {}, {}
    if device.type == "cuda":  # segment falls back only from a GPU (on the CPU there is nowhere to go)
        volume = work / "oom.nrrd"
        _synthetic_ct(volume, size["oom_volume"], size["spacing"])
        bundle = _bundle(work, "pancreas")
        reference = segment_image(load_bundle(bundle, device="cuda"), read_image(volume), device="cuda", backend="torch")
        out = work / "oom_seg.nii.gz"
        # 1 GiB holds the model and a window or two, not 8 windows of 96^3 plus the blended volume.
        proc = subprocess.run([sys.executable, "-c", _OOM_CHILD, "segment", "cuda", str(volume), str(bundle), "1.0",
                               "8", str(out)], capture_output=True, encoding="utf-8", errors="replace", timeout=900)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        seg = json.loads(line[0][7:]) if line else {"messages": [], "error": (proc.stderr or proc.stdout)[-1500:]}
        same = None
        if out.exists():
            same = float((sitk.GetArrayFromImage(sitk.ReadImage(str(out))) ==
                          sitk.GetArrayFromImage(reference.labels)).mean())
        figures.update(segment_messages=seg["messages"], segment_device=seg.get("device"),
                       segment_error=seg.get("error"), segment_labels_equal_fraction=same)
        checks["segment falls back with a message"] = proc.returncode == 0 and any(
            "out of memory" in m for m in seg["messages"])
        checks["the fallback's labels equal the unconstrained run (>= 99.99 % voxels)"] = same is not None and same >= 0.9999
    run = work / "oom-train"
    # CUDA: 0.8 GiB for a 112x112x80 2 + 2 step that needs about 1.9 GiB; CPU: 700 MiB of address space above
    # the imports for a 96^3 step that needs about 2.5 GiB.
    cap, patch = ("0.8", ("112", "112", "80")) if device.type == "cuda" else ("700", ("96", "96", "96"))
    proc = subprocess.run([sys.executable, "-c", _OOM_CHILD, "train", device.type, "-", "-", cap, "train",
                           "--data", str(_demo_data(work)), "-o", str(run), "--recipe", "cse-reference",
                           "--iterations", "2", "--patch-size", *patch, "--batch-labeled", "2", "--batch-unlabeled",
                           "2", "--val-every", "0", "--device", device.type, "--threads", "1", "--events", "json"],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=900)
    errors = [json.loads(x)["message"] for x in proc.stdout.splitlines() if x.startswith("{") and '"error"' in x]
    message = errors[-1] if errors else (proc.stderr or "")[-1500:]
    figures.update(train_exit=proc.returncode, train_message=message)
    checks["train refuses with exit 2 and names the memory"] = proc.returncode == 2 and "needs more than" in message
    checks["the refused run leaves no folder"] = not run.exists()
    return {"figures": figures, "checks": checks}


def section_catalog(device, size, work: Path, write: bool = False) -> dict:
    dry = size is SIZES[True]
    cmd = [sys.executable, str(HERE / "catalog_runtime.py"), "--device", device.type, "--repeats", "1" if dry else "3"]
    cmd += ["--presets", "la"] if dry else (["--write"] if write else [])
    proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=900, cwd=work)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}
    return {"figures": {"seconds": result.get("seconds"), "written": bool(write and not dry and proc.returncode == 0),
                        "error": None if proc.returncode == 0 else proc.stderr[-1500:]},
            "checks": {"catalog run times measured": proc.returncode == 0}}


#: name → section(device, size, work folder, options)
SECTIONS = {
    "inference": lambda device, size, work, opts: section_inference(device, size),
    "whole_volume": lambda device, size, work, opts: section_whole_volume(device, size, work),
    "cse_step": lambda device, size, work, opts: section_cse_step(device, size),
    "resume": lambda device, size, work, opts: section_resume(device, size, work),
    "train_cli": lambda device, size, work, opts: section_train_cli(device, size, work),
    "oom": lambda device, size, work, opts: section_oom(device, size, work),
    "catalog": lambda device, size, work, opts: section_catalog(device, size, work, opts.write_catalog),
}


# ------------------------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# LightUNETR GPU suite - {env.get('gpu', env['device'])}", "",
             f"{env['date']}; driver {env.get('driver')}; torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}); "
             f"MONAI {env.get('monai')}; {'DRY RUN (CPU, tiny sizes: figures mean nothing)' if report['dry_run'] else ''}",
             "", "| figure | measured | goal |", "|---|---|---|"]
    flat = {}
    for name, section in report["sections"].items():
        for key, value in (section.get("figures") or {}).items():
            flat[key] = value
    for key, goal in GOALS.items():
        value = flat.get(key)
        shown = f"{value:.3g}" if isinstance(value, (int, float)) else "not measured"
        lines.append(f"| {key} | {shown} | {goal} |")
    inference = report["sections"].get("inference", {}).get("figures", {})
    if inference.get("rows"):
        lines += ["", "| network | batch | ms | windows/s |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['batch']} | {r['median_ms']:.2f} | {r['windows_per_s']:.1f} |"
                  for r in inference["rows"]]
    whole = report["sections"].get("whole_volume", {}).get("figures", {})
    if whole:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in whole.items() if k.endswith("_s") and isinstance(v, float))
        lines += ["", f"Whole volume {whole.get('volume')} at {whole.get('spacing_mm')} mm ({whole.get('backend')} on "
                  f"{whole.get('device')}): {stages}"]
    lines += ["", "| check | result |", "|---|---|"]
    for name, section in report["sections"].items():
        if section.get("error"):
            lines.append(f"| {name}: ran | FAILED: {section['error'].splitlines()[-1][:150]} |")
        for check, ok in (section.get("checks") or {}).items():
            lines.append(f"| {name}: {check} | {'pass' if ok else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-results", help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks that the suite itself runs")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--write-catalog", action="store_true", help="store the catalog's GPU run times")
    args = parser.parse_args(argv)
    import torch

    device = torch.device("cpu" if args.dry_run else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device here (torch {torch.__version__}); use --dry-run on a CPU", file=sys.stderr)
        return 2
    if args.dry_run:
        torch.set_num_threads(1)
    size = SIZES[bool(args.dry_run)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"dry_run": bool(args.dry_run), "environment": environment(device), "sections": {}}
    with tempfile.TemporaryDirectory(prefix="lightunetr-gpu-suite-") as tmp:
        work = Path(tmp)
        for name in args.only:
            t = time.perf_counter()
            print(f"[gpu-suite] {name} ...", file=sys.stderr, flush=True)
            try:
                result = SECTIONS[name](device, size, work, args)
            except Exception:  # noqa: BLE001 - one broken section must not hide the others
                result = {"error": traceback.format_exc(), "checks": {}}
            result["elapsed_s"] = time.perf_counter() - t
            report["sections"][name] = result
            status = "error" if result.get("error") else ("ok" if all(result["checks"].values()) else "CHECK FAILED")
            print(f"[gpu-suite] {name}: {status} in {result['elapsed_s']:.1f} s", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    (out / "gpu_suite.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    (out / "gpu_suite.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    failed = [n for n, s in report["sections"].items() if s.get("error") or not all(s["checks"].values())]
    if failed:
        print(f"[gpu-suite] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
