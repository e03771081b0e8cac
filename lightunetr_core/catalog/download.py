"""Download a catalog model, verify it, convert it into a bundle and add it to a model library.

The file is fetched with pooch (``pooch.retrieve`` over ``requests``, into a temporary file renamed only
when complete), with progress events and cancel. Then it is verified: its SHA-256 is compared with the
catalog's when the publisher states one, and it must load with ``torch.load(weights_only=True)`` *strictly*
as the preset's network. The bundle is written straight into the models folder by ``save_bundle``, which
assembles it under a hidden name and renames it into place; its card records the checkpoint's SHA-256, the
URL, the catalog entry and version, the licence and the citation, and the bundle's own ``weights_sha256``
is checked on every later load. A failed, interrupted, corrupt or cancelled download leaves nothing behind:
no file in the cache, no bundle in the library. Verified checkpoints stay in the download cache
(``$LIGHTUNETR_CACHE/downloads``), so converting again needs no network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from lightunetr_core.catalog.catalog import CATALOG_VERSION, CatalogEntry, CatalogError
from lightunetr_core.storage import cache_root
from lightunetr_core.vocabulary import InputError


class DownloadError(InputError):
    """The model could not be downloaded or verified; the message says why and what to do."""


def cache_folder() -> Path:
    return cache_root() / "downloads"


class _Progress:
    """The progress-bar object pooch's HTTPDownloader drives (``total``, ``update``, ``reset``, ``close``):
    emits ``progress`` events (bytes) and stops the download when the job is cancelled."""

    def __init__(self, events, cancel, name: str):
        self.events, self.cancel, self.name = events, cancel, name
        self.total = 0
        self.done = 0
        self._last = -1.0

    def update(self, n: int) -> None:
        import time

        self.done += n
        now = time.monotonic()
        if self.events is not None and (now - self._last > 0.25 or (self.total and self.done >= self.total)):
            self._last = now
            done = min(self.done, self.total) if self.total else self.done
            self.events.progress(done, self.total or 0, unit="byte", stage="download", model=self.name)
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        pass


def _fetch(entry: CatalogEntry, folder: Path, base_url: str | None, events, cancel) -> Path:
    import pooch
    import requests

    pooch.get_logger().setLevel("WARNING")  # its "Downloading..." / "SHA256 hash..." lines; we emit events
    url = entry.download_url(base_url)
    known = f"sha256:{entry.sha256}" if entry.sha256 else None
    downloader = pooch.HTTPDownloader(progressbar=_Progress(events, cancel, entry.name), timeout=60)
    try:
        return Path(pooch.retrieve(url, known_hash=known, fname=entry.file, path=str(folder), downloader=downloader))
    except requests.exceptions.ChunkedEncodingError:
        raise DownloadError(f"the download of {url} was interrupted (the connection closed before the whole file "
                            "arrived); nothing was kept. Try again.") from None
    except requests.exceptions.HTTPError as exc:
        raise DownloadError(f"{url}: the server answered {exc.response.status_code if exc.response is not None else exc}; "
                            "check the address (or the mirror in $LIGHTUNETR_CATALOG_BASE_URL)") from None
    except requests.exceptions.RequestException as exc:
        raise DownloadError(f"{url} cannot be reached ({type(exc).__name__}: {str(exc)[:200]}). Check the network or a "
                            "proxy; behind a firewall download the file by hand and use 'lightunetr import-reference "
                            f"FILE --preset {entry.preset}'.") from None
    except ValueError as exc:  # pooch: the SHA-256 differs from the catalog's
        raise DownloadError(f"{url}: the downloaded file is not the published one ({exc}); nothing was kept.") from None


#: A work folder of the cache untouched for this long belongs to a download whose process was killed.
ABANDONED_AFTER_S = 600.0


def _sweep_abandoned(cache: Path) -> None:
    """Remove the partial files of downloads that were killed (no chance to clean up themselves)."""
    import time

    now = time.time()
    for folder in cache.glob(".download-*"):
        try:
            newest = max([p.stat().st_mtime for p in folder.rglob("*")] + [folder.stat().st_mtime])
        except OSError:
            continue
        if now - newest > ABANDONED_AFTER_S:
            shutil.rmtree(folder, ignore_errors=True)


def download_model(entry: CatalogEntry, models_dir: str | os.PathLike, base_url: str | None = None, events=None,
                   cancel=None, overwrite: bool = False) -> Path:
    """The bundle of ``entry`` in ``models_dir`` (``<name>.lightunetr``): downloaded (or taken from the cache),
    verified and converted. An existing bundle of the same entry is kept unless ``overwrite``."""
    from lightunetr_core.bundle import BundleError, read_model_card, sha256_file
    from lightunetr_core.catalog.reference import ReferenceCheckpointError, bundle_from_reference

    models_dir = Path(models_dir)
    target = models_dir / f"{entry.name}.lightunetr"
    if target.exists() and not overwrite:
        try:
            card = read_model_card(target)
        except BundleError:
            card = None
        if card is not None and card.provenance.get("catalog") == entry.name:
            return target
        raise DownloadError(f"{target} exists and is not the catalog model {entry.name!r}; remove it or pass --overwrite")
    cache = cache_folder()
    cache.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned(cache)
    cached = cache / entry.file
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=str(cache)))
    try:
        if cached.is_file():
            checkpoint = cached
            if events is not None:
                events.log(f"{entry.name}: using the verified download in {cached}")
        else:
            if events is not None:
                events.stage("download", f"downloading {entry.name} from {entry.download_url(base_url)}")
            checkpoint = _fetch(entry, work, base_url, events, cancel)
        if cancel is not None:
            cancel.raise_if_cancelled()
        digest = sha256_file(checkpoint)
        if entry.sha256 and digest != entry.sha256:
            raise DownloadError(f"{checkpoint.name}: SHA-256 {digest[:16]}… is not the published {entry.sha256[:16]}…")
        if events is not None:
            events.stage("convert", f"verifying {checkpoint.name} (weights only, strict) and writing the bundle")
        try:
            path = bundle_from_reference(
                checkpoint, target, preset=entry.preset, name=entry.name, overwrite=overwrite,
                description=entry.title,
                card_fields={"version": f"catalog-{CATALOG_VERSION}", "license": entry.license, "authors": entry.authors,
                             "citation": entry.citation},
                provenance={"catalog": entry.name, "catalog_version": CATALOG_VERSION, "url": entry.url,
                            "source": entry.file, "labeled_cases": entry.labeled_cases, "input": entry.input})
        except (ReferenceCheckpointError, BundleError) as exc:
            if checkpoint == cached:
                cached.unlink(missing_ok=True)  # a damaged cache entry is never used again
            raise DownloadError(f"the file downloaded for {entry.name} is not a valid checkpoint of the released network "
                                f"({exc}); nothing was kept. Try again.") from None
        if checkpoint != cached:
            os.replace(checkpoint, cached)  # verified: kept for a later conversion
        return path
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["DownloadError", "download_model", "cache_folder", "CatalogError"]
