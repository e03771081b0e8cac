"""Training checkpoints: everything needed to resume bit-for-bit on the same device.

Contents (all loadable with ``torch.load(..., weights_only=True)``): ``model`` (state dict),
``optimizer``, ``scheduler``, ``thresholds`` (SMC adaptive thresholds), ``rng`` (torch CPU state, CUDA
states, the recipe and sampler generators, numpy's global state — all stored as tensors),
``iteration``, ``config`` (plain values), ``best`` (best validation Dice so far and its iteration),
``sampler`` (the patch sampler's epoch queues, so resumed runs visit cases in the same order).
Written to a temporary file in the same folder and renamed, so a crash never leaves a torn file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightunetr_core.atomic import atomic_output

CHECKPOINT_FORMAT = 1


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_output(path, "wb") as handle:
        torch.save(obj, handle)
    return path


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """RNG states as tensors: torch CPU, every CUDA device, numpy global, named generators."""
    state: dict[str, Any] = {"torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.clone() for s in torch.cuda.get_rng_state_all()]
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
        "pos": torch.tensor(int(pos)),
        "has_gauss": torch.tensor(int(has_gauss)),
        "cached_gaussian": torch.tensor(float(cached), dtype=torch.float64),
    }
    state["generators"] = {name: g.get_state().clone() for name, g in (generators or {}).items()}
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in states])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                             int(n["has_gauss"]), float(n["cached_gaussian"])))
    for name, g in (generators or {}).items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name].cpu())


def sampler_state(sampler) -> dict:
    """The sampler's own state beyond its generator (the shuffled-epoch queues), as tensors."""
    if hasattr(sampler, "state_dict"):
        return sampler.state_dict()
    out = {}
    for name in ("_labeled_order", "_unlabeled_order"):
        order = getattr(sampler, name, None)
        if order is not None and hasattr(order, "queue"):
            out[name] = torch.tensor(list(order.queue), dtype=torch.int64)
    return out


def load_sampler_state(sampler, state: dict) -> None:
    if not state:
        return
    if hasattr(sampler, "load_state_dict"):
        sampler.load_state_dict(state)
        return
    for name, queue in state.items():
        order = getattr(sampler, name, None)
        if order is not None and hasattr(order, "queue"):
            order.queue = [int(i) for i in queue.tolist()]


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer, scheduler, thresholds,
                    rng: dict, iteration: int, config: dict | None = None, best: dict | None = None,
                    sampler: dict | None = None, ranks: list | None = None) -> Path:
    module = model.module if hasattr(model, "module") else model
    payload = {
        "format": CHECKPOINT_FORMAT,
        "iteration": int(iteration),
        "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "thresholds": thresholds.state_dict() if thresholds is not None else None,
        "rng": rng,
        "config": dict(config or {}),
        "best": dict(best or {}),
        "sampler": dict(sampler or {}),
    }
    if ranks is not None:
        # DDP: every rank's own RNG / sampler / threshold state, so each rank resumes its own stream.
        payload["ranks"] = list(ranks)
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; resume needs the run folder of an earlier run")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a LightUNETR training checkpoint (format {CHECKPOINT_FORMAT})")
    return payload
