"""Inference backends: PyTorch, or ONNX Runtime (CPU) on a cached, verified ONNX export of the network.

``resolve_backend("auto", device)`` picks ONNX Runtime when the network runs on the CPU and the
``onnxruntime`` package can be imported, PyTorch otherwise. ONNX Runtime runs one Light-UNETR window
about twice as fast as PyTorch on the CPU (docs/evaluation.md).

The ONNX file is exported once per network (:func:`lightunetr_core.export.onnx.export_onnx`, which
checks ONNX Runtime against PyTorch before the file is renamed into place) and cached in
:func:`onnx_cache_dir` (``$LIGHTUNETR_CACHE/onnx``, else ``$XDG_CACHE_HOME/lightunetr/onnx``, else
``~/.cache/lightunetr/onnx``). The file name is a SHA-256 over the card's ``weights_sha256``, the
weights actually in memory, the architecture, patch size, channel count and opset, so a model changed
in memory never reuses a stale export. Nothing is written next to the user's bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

from lightunetr_core.vocabulary import InputError

__all__ = [
    "BACKEND_CHOICES",
    "BackendUnavailableError",
    "onnxruntime_available",
    "resolve_backend",
    "onnx_cache_dir",
    "onnx_cache_key",
    "cached_onnx_path",
    "OnnxRuntimePredictor",
    "onnxruntime_predictor",
    "prune_onnx_cache",
]

BACKEND_CHOICES = ("auto", "torch", "onnxruntime")
ONNX_OPSET = 17
_CACHE_FORMAT = 1  # bump when the export itself changes
MAX_CACHED_EXPORTS = 16  # oldest (by last use) beyond this are deleted after a new export
INSTALL_HINT = "pip install 'lightunetr-core[onnx]'"


class BackendUnavailableError(InputError):
    """The requested backend cannot run here (missing package, or a device it does not support)."""


def onnxruntime_available() -> bool:
    """True when ``import onnxruntime`` works (a blocked or broken install counts as missing)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str | None, device) -> str:
    """``"auto"`` → ``"onnxruntime"`` on a CPU device when onnxruntime imports, else ``"torch"``.

    ``"onnxruntime"`` is checked: it needs the package and the CPU (raises :class:`BackendUnavailableError`
    naming the fix). ``device`` is a ``torch.device`` or its name.
    """
    name = (backend or "auto").lower()
    if name not in BACKEND_CHOICES:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    device_type = getattr(device, "type", str(device).split(":")[0])
    if name == "auto":
        return "onnxruntime" if device_type == "cpu" and onnxruntime_available() else "torch"
    if name == "onnxruntime":
        if not onnxruntime_available():
            raise BackendUnavailableError(
                "backend 'onnxruntime' needs the onnxruntime package, which is not installed (or cannot be "
                f"imported): {INSTALL_HINT}; or use --backend torch (or auto)"
            )
        if device_type != "cpu":
            raise BackendUnavailableError(
                f"backend 'onnxruntime' runs on the CPU only, but device {device_type!r} was requested; use "
                "--device cpu, or --backend torch (or auto) for the GPU"
            )
    return name


def onnx_cache_dir() -> Path:
    """Folder of cached ONNX exports: ``$LIGHTUNETR_CACHE/onnx``, ``$XDG_CACHE_HOME/lightunetr/onnx`` or
    ``~/.cache/lightunetr/onnx``."""
    from lightunetr_core.storage import cache_root

    return cache_root() / "onnx"


def _state_digest(model) -> str:
    """SHA-256 of the weights in memory (names, dtypes, shapes, bytes), in a stable order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def onnx_cache_key(bundle, opset: int = ONNX_OPSET) -> str:
    """Cache key of a loaded bundle's network (see module docstring)."""
    card = bundle.card
    description = {
        "format": _CACHE_FORMAT,
        "weights_sha256": getattr(card, "weights_sha256", "") or "",
        "state": _state_digest(bundle.model),
        "architecture": card.architecture,
        "patch_size": [int(s) for s in card.patch_size],
        "channels": len(card.input_channels),
        "model_class": type(bundle.model).__name__,
        "opset": int(opset),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def cached_onnx_path(bundle, opset: int = ONNX_OPSET, log=None) -> Path:
    """Path of the verified ONNX export of ``bundle``'s network, exporting it first when not cached.

    The export goes through :func:`lightunetr_core.export.onnx.export_onnx` (temporary file, ONNX checker,
    ONNX Runtime vs PyTorch check, rename), so a cached file is always complete and verified.
    """
    from lightunetr_core.export.onnx import export_onnx

    card = bundle.card
    key = onnx_cache_key(bundle, opset)
    weights = (getattr(card, "weights_sha256", "") or "")[:12] or "memory"
    folder = onnx_cache_dir()
    path = folder / f"{card.architecture}-{weights}-{key[:24]}.onnx"
    if path.is_file() and path.stat().st_size > 0:
        try:
            os.utime(path)  # "last used", for pruning
        except OSError:
            pass
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendUnavailableError(
            f"cannot create the ONNX cache folder {folder} ({exc}); set LIGHTUNETR_CACHE to a writable folder "
            "or use --backend torch"
        ) from None
    if log is not None:
        log(f"exporting the network to ONNX once (cached in {folder})")
    shape = [1, len(card.input_channels), *[int(s) for s in card.patch_size]]
    metadata = {"lightunetr_model_card": card.to_json(), "lightunetr_cache_key": key}
    # overwrite=True: another process may have finished the same export meanwhile (same content).
    export_onnx(bundle.model, path, shape, opset=opset, metadata=metadata, overwrite=True)
    prune_onnx_cache(folder, keep=MAX_CACHED_EXPORTS, protect=path)
    return path


def prune_onnx_cache(folder: str | os.PathLike | None = None, keep: int = MAX_CACHED_EXPORTS,
                     protect: str | os.PathLike | None = None) -> list[Path]:
    """Delete all but the ``keep`` most recently used ``.onnx`` files of the cache (never ``protect``);
    returns the deleted paths. Files that vanish or cannot be deleted meanwhile are skipped."""
    folder = Path(folder) if folder is not None else onnx_cache_dir()
    entries = []
    for path in folder.glob("*.onnx"):
        try:
            entries.append((path.stat().st_mtime, path))
        except OSError:
            continue
    entries.sort(reverse=True)
    deleted = []
    for _, path in entries[max(0, int(keep)):]:
        if protect is not None and Path(path) == Path(protect):
            continue
        try:
            path.unlink()
            deleted.append(path)
        except OSError:
            continue
    return deleted


class OnnxRuntimePredictor:
    """Callable ``batch (B, C, X, Y, Z) torch tensor → logits torch tensor`` running an ORT CPU session;
    pass it to MONAI's ``sliding_window_inference`` (numpy in, numpy out)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.path = str(path)
        self.threads = threads
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = list(self.session.get_inputs()[0].shape)

    def __call__(self, batch):
        import numpy as np
        import torch

        x = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        (logits,) = self.session.run(None, {self.input_name: x})
        return torch.from_numpy(logits)


_SESSIONS: OrderedDict = OrderedDict()
_SESSIONS_LOCK = threading.Lock()
_MAX_SESSIONS = 2


def onnxruntime_predictor(bundle, threads: int | None = None, log=None) -> OnnxRuntimePredictor:
    """An :class:`OnnxRuntimePredictor` for ``bundle``'s network (exported and cached on first use; the
    session is kept in memory for the next case). A cached file that ONNX Runtime cannot load is
    exported again once."""
    path = cached_onnx_path(bundle, log=log)
    key = (str(path), threads)
    with _SESSIONS_LOCK:
        if key in _SESSIONS:
            _SESSIONS.move_to_end(key)
            return _SESSIONS[key]
    try:
        predictor = OnnxRuntimePredictor(path, threads)
    except Exception as exc:  # noqa: BLE001 - damaged cache file: export again
        if log is not None:
            log(f"the cached ONNX file {path} could not be loaded ({type(exc).__name__}); exporting it again")
        path.unlink(missing_ok=True)
        path = cached_onnx_path(bundle, log=log)
        predictor = OnnxRuntimePredictor(path, threads)
    with _SESSIONS_LOCK:
        _SESSIONS[key] = predictor
        while len(_SESSIONS) > _MAX_SESSIONS:
            _SESSIONS.popitem(last=False)
    return predictor
