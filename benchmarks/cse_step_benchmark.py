"""Time and peak memory of one training step per recipe/option (batch 2 labelled + 2 unlabelled).

    python benchmarks/cse_step_benchmark.py                       # 112×112×80, LightUNETR, CPU or GPU
    python benchmarks/cse_step_benchmark.py --repeats 5 --large   # also Light-UNETR-L
    python benchmarks/cse_step_benchmark.py --patch 64,64,64 --json out.json

Every configuration runs in its own subprocess (so the peak RSS on CPU belongs to that configuration
alone), with warm-up steps followed by timed steps (median and minimum reported). A step is
``zero_grad + training_step + backward + optimizer.step`` on random data (real-looking sizes, no I/O).

On CPU the anchor is one supervised training step of MONAI's SegResNet (init_filters 8, batch 2,
CE + DiceSq) measured in the same run; every row gets a ×SegResNet ratio so numbers from a loaded,
shared machine stay comparable. On CUDA, peak memory is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = [
    # name, architecture, recipe, lean, bf16
    ("segresnet-supervised (anchor)", "segresnet", "supervised", False, False),
    ("lightunetr supervised", "lightunetr", "supervised", False, False),
    ("lightunetr cse-reference (4 passes)", "lightunetr", "reference", False, False),
    ("lightunetr cse-reference --lean (3 passes)", "lightunetr", "reference", True, False),
    ("lightunetr cse-reference --bf16", "lightunetr", "reference", False, True),
    ("lightunetr cse-paper", "lightunetr", "paper", False, False),
]
LARGE = [
    ("lightunetr_large cse-reference", "lightunetr_large", "reference", False, False),
    ("lightunetr_large cse-reference --lean", "lightunetr_large", "reference", True, False),
]


def random_batch(patch, device, generator, labeled: int = 2, unlabeled: int = 2) -> tuple[dict, dict]:
    """A labelled and an unlabelled batch of random crops (the sampler's fields) on ``device``."""
    import torch

    lab = {"image": torch.randn(labeled, 1, *patch, generator=generator).to(device),
           "label": torch.randint(0, 2, (labeled, *patch), generator=generator).to(device)}
    unl = {"image": torch.randn(unlabeled, 1, *patch, generator=generator).to(device),
           "volume_min": torch.full((unlabeled, 1), -4.0), "volume_max": torch.full((unlabeled, 1), 4.0)}
    return lab, unl


def worker(arch: str, recipe: str, lean: bool, bf16: bool, patch, device: str, warmup: int, repeats: int) -> dict:
    import resource

    import torch

    from lightunetr_core.training.losses import supervised_loss
    from lightunetr_core.training.recipes import RecipeConfig, make_thresholds, training_step

    torch.manual_seed(0)
    dev = torch.device(device)
    if arch == "segresnet":
        from monai.networks.nets import SegResNet

        model = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8)
    else:
        from lightunetr_core.models import build_model

        kwargs = {"in_channels": 1, "num_classes": 2}
        if arch == "lightunetr":
            kwargs["patch_size"] = patch
        model = build_model(arch, **kwargs)
    model = model.to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(1)
    lab, unl = random_batch(patch, dev, g)
    cfg = RecipeConfig("reference" if recipe == "supervised" and arch == "segresnet" else recipe, lean=lean, bf16=bf16)
    thresholds = make_thresholds(cfg, 2, patch, dev)

    def step():
        opt.zero_grad(set_to_none=True)
        if arch == "segresnet":
            ce, dice = supervised_loss(model(lab["image"]), lab["label"])
            loss = ce + dice
        else:
            loss = training_step(model, lab, unl, cfg, thresholds, g).loss
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times, "peak_bytes": peak,
            "peak_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "process peak RSS",
            "threads": torch.get_num_threads(), "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "torch": torch.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patch", default="112,112,80")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--large", action="store_true", help="also Light-UNETR-L (slow on CPU: ~100× Light-UNETR)")
    p.add_argument("--only", default=None, help="comma-separated substrings of configuration names to run")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    patch = tuple(int(s) for s in args.patch.split(","))
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        arch, recipe, lean, bf16 = json.loads(args.worker)
        print("RESULT " + json.dumps(worker(arch, recipe, lean, bf16, patch, args.device, args.warmup, args.repeats)))
        return 0
    configs = CONFIGS + (LARGE if args.large else [])
    if args.only:
        keys = [k.strip() for k in args.only.split(",")]
        configs = [c for c in configs if c[1] == "segresnet" or any(k in c[0] for k in keys)]
    rows = []
    for name, arch, recipe, lean, bf16 in configs:
        cmd = [sys.executable, __file__, "--patch", args.patch, "--device", args.device, "--warmup", str(args.warmup),
               "--repeats", str(args.repeats), "--worker", json.dumps([arch, recipe, lean, bf16])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not line:
            rows.append({"name": name, "error": (proc.stderr or proc.stdout)[-800:]})
            print(f"{name}: FAILED\n{rows[-1]['error']}", file=sys.stderr)
            continue
        rows.append({"name": name, **json.loads(line[0][7:])})
        r = rows[-1]
        print(f"{name:45s} median {r['median_s']:8.3f} s  min {r['min_s']:8.3f} s  peak {r['peak_bytes'] / 2**30:6.2f} GiB",
              file=sys.stderr)
    anchor = next((r for r in rows if r["name"].startswith("segresnet") and "median_s" in r), None)
    print(f"\npatch {patch}, batch 2 labelled + 2 unlabelled, device {args.device}, "
          f"{args.repeats} timed step(s) after {args.warmup} warm-up\n")
    print("| configuration | median s | min s | ×SegResNet step (median / min) | peak GiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "median_s" not in r:
            print(f"| {r['name']} | failed | | | |")
            continue
        ratio = (f"{r['median_s'] / anchor['median_s']:.2f} / {r['min_s'] / anchor['min_s']:.2f}" if anchor else "–")
        print(f"| {r['name']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {ratio} | {r['peak_bytes'] / 2**30:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"patch": patch, "device": args.device, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
