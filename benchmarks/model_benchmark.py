"""Forward-pass benchmark: Light-UNETR and Light-UNETR-L against MONAI SegResNet, UNETR and SwinUNETR.

Every model runs on the same inputs in one process, round-robin (each model once per round), so
background load hits all alike; results are reported as ratios to Light-UNETR at the same input size
as well as absolute times. UNETR and SwinUNETR need a fixed size and are compared at 96³ with
Light-UNETR at 96³.

On a CUDA device it also measures throughput (volumes/s) at batch 1 and 8 in fp32 and bf16, eager and
replayed as a CUDA graph (lightunetr_core.models.accelerate.CUDAGraphRunner), peak memory, and checks
that the graph output equals the eager output.

    python benchmarks/model_benchmark.py                 # CPU, all models
    python benchmarks/model_benchmark.py --quick         # fewer repeats, no SwinUNETR/L
    python benchmarks/model_benchmark.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from lightunetr_core.models import LightUNETR, LightUNETRLarge
from lightunetr_core.models.cost import measure_cost


def build_models(quick: bool) -> list[tuple[str, torch.nn.Module, tuple[int, int, int], str]]:
    """(name, model, input size, name of the Light-UNETR row it is compared with)."""
    from monai.networks.nets import SegResNet, SwinUNETR, UNETR

    la, cube = (112, 112, 80), (96, 96, 96)
    models = [
        ("LightUNETR 112x112x80", LightUNETR(patch_size=la), la, "LightUNETR 112x112x80"),
        ("LightUNETR 96^3", LightUNETR(patch_size=cube), cube, "LightUNETR 96^3"),
        ("SegResNet(init_filters=8)", SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8), la,
         "LightUNETR 112x112x80"),
        ("UNETR(96^3)", UNETR(in_channels=1, out_channels=2, img_size=cube), cube, "LightUNETR 96^3"),
    ]
    if not quick:
        models.append(("LightUNETR-L", LightUNETRLarge(), la, "LightUNETR 112x112x80"))
        models.append(("SwinUNETR(feature 48)", SwinUNETR(in_channels=1, out_channels=2, feature_size=48), cube,
                       "LightUNETR 96^3"))
    return models


def time_cpu(models, warmup: int, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name, *_ in models}
    inputs = {name: torch.randn(1, 1, *size) for name, _, size, _ in models}
    with torch.no_grad():
        for _ in range(warmup):
            for name, model, _, _ in models:
                model(inputs[name])
        for _ in range(repeats):
            for name, model, _, _ in models:
                start = time.perf_counter()
                model(inputs[name])
                times[name].append(time.perf_counter() - start)
    return times


def gpu_throughput(model: torch.nn.Module, size, batch: int, dtype, graph: bool, repeats: int = 30) -> dict:
    from lightunetr_core.models.accelerate import CUDAGraphRunner

    device = torch.device("cuda")
    model = model.to(device).eval()
    x = torch.randn(batch, 1, *size, device=device)
    torch.cuda.reset_peak_memory_stats()
    autocast_dtype = torch.bfloat16 if dtype == "bf16" else None
    if graph:
        runner = CUDAGraphRunner(model, x.shape, autocast_dtype=autocast_dtype)
    else:
        def runner(t):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast_dtype is not None):
                return model(t).float()
    for _ in range(5):
        runner(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = runner(x)
    torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) / repeats
    return {
        "batch": batch, "dtype": dtype, "cuda_graph": graph, "ms_per_batch": elapsed * 1e3,
        "volumes_per_s": batch / elapsed, "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
        "output": out,
    }


def run_gpu(results: dict) -> None:
    la = (112, 112, 80)
    from monai.networks.nets import SegResNet

    rows = []
    for name, factory in [("LightUNETR", lambda: LightUNETR(patch_size=la)),
                          ("SegResNet(init_filters=8)",
                           lambda: SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8))]:
        model = factory()
        eager_reference = None
        for batch in (1, 8):
            for dtype in ("fp32", "bf16"):
                for graph in (False, True):
                    row = gpu_throughput(model, la, batch, dtype, graph)
                    out = row.pop("output")
                    if dtype == "fp32" and not graph:
                        eager_reference = out
                    if dtype == "fp32" and graph and eager_reference is not None:
                        row["max_abs_diff_vs_eager"] = (out - eager_reference).abs().max().item()
                    rows.append({"model": name, **row})
                    print(f"GPU {name:<26} b{batch} {dtype} graph={graph!s:<5} "
                          f"{row['ms_per_batch']:8.2f} ms  {row['volumes_per_s']:8.1f} vol/s  "
                          f"peak {row['peak_mib']:7.0f} MiB", flush=True)
    results["gpu"] = {"device": torch.cuda.get_device_name(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 warm-ups, 5 repeats, skip the slowest models")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-cpu", action="store_true", help="only the GPU part")
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.repeats = 2, 5
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict = {"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                     "threads": torch.get_num_threads()}
    if not args.no_cpu:
        models = [(n, m.eval(), s, b) for n, m, s, b in build_models(args.quick)]
        times = time_cpu(models, args.warmup, args.repeats)
        medians = {name: statistics.median(t) for name, t in times.items()}
        minima = {name: min(t) for name, t in times.items()}
        rows = []
        print(f"CPU, {torch.get_num_threads()} threads, {args.repeats} round-robin rounds")
        print(f"{'model':<28}{'input':>14}{'params':>10}{'GMAC':>9}{'median s':>10}{'min s':>8}{'x LightUNETR':>16}")
        for name, model, size, baseline in models:
            cost = measure_cost(model, (1, 1, *size))
            ratio_median = medians[name] / medians[baseline]
            ratio_min = minima[name] / minima[baseline]
            rows.append({"model": name, "input": list(size), "parameters": cost.parameters, "gmacs": cost.gmacs,
                         "median_s": medians[name], "min_s": minima[name], "ratio_median": ratio_median,
                         "ratio_min": ratio_min, "baseline": baseline})
            print(f"{name:<28}{'x'.join(map(str, size)):>14}{cost.parameters / 1e6:>9.2f}M{cost.gmacs:>9.2f}"
                  f"{medians[name]:>10.3f}{minima[name]:>8.3f}{ratio_median:>8.1f} /{ratio_min:>5.1f}", flush=True)
        results["cpu"] = rows
    if torch.cuda.is_available():
        run_gpu(results)
    else:
        print("no CUDA device: GPU throughput not measured")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
