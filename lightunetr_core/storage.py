"""Where LightUNETR keeps files on this machine, and how a file's content is identified.

* :func:`cache_root` — ``$LIGHTUNETR_CACHE``, else ``$XDG_CACHE_HOME/lightunetr``, else ``~/.cache/lightunetr``;
  the downloads (``catalog/download.py``), the ONNX exports (``inference/backends.py``) and the anatomy source
  (``data/anatomy.py``) each keep a folder in it.
* :func:`sha256_file` — the SHA-256 of a file, read in chunks (bundle weights, checkpoints, downloaded sources).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_root", "sha256_file"]


def cache_root() -> Path:
    root = os.environ.get("LIGHTUNETR_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "lightunetr"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
