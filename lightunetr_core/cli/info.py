"""``lightunetr info``: versions, devices and whether the installed torch can use the GPU."""

from __future__ import annotations

import argparse
import json
import platform
import sys


def environment_report() -> dict:
    """Versions of Python, torch, MONAI, SimpleITK and the compute devices torch can use."""
    import torch

    report: dict = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            report["cuda_devices"].append(
                {"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                 "capability": f"{props.major}.{props.minor}"}
            )
    for module in ("monai", "SimpleITK", "numpy", "safetensors"):
        try:
            report[module] = __import__(module).__version__
        except Exception as error:  # a missing optional package is a finding, not a crash
            report[module] = f"unavailable ({error.__class__.__name__})"
    from lightunetr_core import __version__

    report["lightunetr_core"] = __version__
    return report


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="show versions and compute devices")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = environment_report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>18}: {value}")
    return 0
