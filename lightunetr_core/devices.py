"""Compute devices: choosing one ("auto", "cuda", "mps", "cpu") and recognising out-of-memory errors (used by inference and training)."""

from __future__ import annotations

import torch

from lightunetr_core.vocabulary import DEVICES as DEVICE_CHOICES

__all__ = ["select_device", "DEVICE_CHOICES", "is_out_of_memory"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``: CUDA if available, then Apple MPS, then CPU. ``"cuda"``/``"cuda:1"``/``"mps"``/``"cpu"``
    are checked and give a clear ``ValueError`` when not available here."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but no CUDA GPU is usable by this PyTorch build "
                             f"(torch {torch.__version__}); use --device cpu or auto, or install a CUDA build of PyTorch")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    if name == "mps":
        if not _mps_available():
            raise ValueError("device 'mps' requested but Apple Metal (MPS) is not available; use --device cpu or auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def is_out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: CUDA's ``OutOfMemoryError``, MPS's, or the CPU allocator's (c10's
    ``DefaultCPUAllocator: can't allocate memory`` / ``not enough memory``)."""
    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text)
