"""The model catalog: ``catalog.json`` beside this file, versioned (``catalog_version``).

Each entry names a released checkpoint (``url``, ``file``, optional ``sha256`` when the publisher states
one), the preset that converts it (:data:`.reference.PRESETS`), what it was trained on, the input it expects
(modality, field of view, whether a crop/ROI is needed), its licence and citation as published, and the
measured run time (``runtime``: seconds on the CPU of a stated machine; ``null`` where not measured) that the
command line and the Slicer module show before a download.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from lightunetr_core.vocabulary import InputError

CATALOG_FILE = Path(__file__).with_name("catalog.json")
CATALOG_VERSION = 1
#: Replaces the host and folder of every entry's URL (a mirror, a proxy cache, a test server).
BASE_URL_ENV = "LIGHTUNETR_CATALOG_BASE_URL"


class CatalogError(InputError):
    """The catalog or a catalog name is unusable; the message says what to do."""


@dataclass
class CatalogEntry:
    name: str
    title: str
    preset: str
    file: str
    url: str
    labeled_cases: int
    input: dict
    license: str
    citation: str
    authors: str
    source: str
    sha256: str | None = None
    runtime: dict = field(default_factory=dict)

    def download_url(self, base_url: str | None = None) -> str:
        base = base_url if base_url is not None else os.environ.get(BASE_URL_ENV)
        return f"{base.rstrip('/')}/{self.file}" if base else self.url

    def runtime_text(self) -> str:
        cpu = self.runtime.get("cpu_s")
        gpu = self.runtime.get("gpu_s")
        parts = [f"about {cpu:.0f} s on a CPU" if isinstance(cpu, (int, float)) else "CPU: not measured",
                 f"about {gpu:.1f} s on a GPU" if isinstance(gpu, (int, float)) else "GPU: not measured"]
        where = self.runtime.get("measured_on")
        volume = self.runtime.get("volume")
        return ", ".join(parts) + (f" (for {volume}; {where})" if volume or where else "")

    def describe(self) -> str:
        """What a user reads before downloading."""
        i = self.input
        return (f"{self.name}: {self.title}\n"
                f"  input: {i.get('modality')}; field of view: {i.get('field_of_view')}; crop/ROI: {i.get('crop')}; "
                f"normalisation: {i.get('normalization')}\n"
                f"  run time: {self.runtime_text()}\n"
                f"  licence: {self.license}\n  from: {self.source}\n  file: {self.url}")


def load_catalog(path: str | os.PathLike | None = None) -> dict[str, CatalogEntry]:
    """{name: entry} of the catalog (default: the one shipped with lightunetr_core)."""
    from lightunetr_core.catalog.reference import PRESETS

    path = Path(path) if path else CATALOG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read the model catalog ({exc})") from None
    version = data.get("catalog_version")
    if not isinstance(version, int) or version > CATALOG_VERSION:
        raise CatalogError(f"{path}: catalog version {version!r} is not one this lightunetr reads ({CATALOG_VERSION}); "
                           "update lightunetr-core")
    entries = {}
    for raw in data.get("models", []):
        known = {k: raw[k] for k in CatalogEntry.__dataclass_fields__ if k in raw}
        try:
            entry = CatalogEntry(**known)
        except TypeError as exc:
            raise CatalogError(f"{path}: entry {raw.get('name')!r} is incomplete ({exc})") from None
        if entry.preset not in PRESETS:
            raise CatalogError(f"{path}: entry {entry.name!r} names an unknown preset {entry.preset!r}")
        entries[entry.name] = entry
    return entries


def find(name: str, path: str | os.PathLike | None = None) -> CatalogEntry:
    entries = load_catalog(path)
    if name not in entries:
        raise CatalogError(f"no model {name!r} in the catalog; available: {', '.join(entries)} "
                           "('lightunetr download --list' describes them)")
    return entries[name]
