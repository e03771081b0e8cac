"""Model bundles (``NAME.lightunetr/`` folders with ``model_card.json`` + ``model.safetensors``) in a
models folder. Reads only the JSON card (no torch in the Slicer process); the engine re-validates the
card and checks the weights' SHA-256 when it loads the bundle.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field

# The engine's bundle constants and models folder (lightunetr_core/bundle.py imports only the standard
# library at module level: no torch in Slicer's process).
from lightunetr_core.atomic import atomic_folder
from lightunetr_core.bundle import BUNDLE_SUFFIX, CARD_FILE, WEIGHTS_FILE, default_models_folder

from .segments import LabelSpec

logger = logging.getLogger("LightUNETR")


class ModelError(ValueError):
    """A model bundle is missing or unusable; the message says what to do."""


@dataclass
class ModelInfo:
    path: str
    name: str
    description: str
    architecture: str
    patch_size: list
    input_channels: list
    labels: list  # list[LabelSpec], background excluded
    card: dict = field(repr=False, default_factory=dict)

    @property
    def num_channels(self) -> int:
        return len(self.input_channels)

    @property
    def label_names(self) -> list[str]:
        return [s.name for s in self.labels]

    def summary(self) -> str:
        return (f"{self.name} ({self.architecture}, patch {'x'.join(str(s) for s in self.patch_size)}, "
                f"{self.num_channels} channel(s): {', '.join(self.input_channels)}; "
                f"labels: {', '.join(self.label_names)})")


def read_model_info(path: str) -> ModelInfo:
    """Read a bundle's card. Raises :class:`ModelError` with a message naming the problem."""
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.basename(path) in (CARD_FILE, WEIGHTS_FILE):
        path = os.path.dirname(path)
    if not os.path.exists(path):
        raise ModelError(f"Model not found: {path}. Choose a '<name>{BUNDLE_SUFFIX}' folder.")
    if os.path.isfile(path):
        if path.lower().endswith((".pt", ".pth", ".ckpt", ".pkl")):
            raise ModelError(f"{path} is a PyTorch checkpoint, not a LightUNETR bundle. 'Add model...' converts an "
                             "authors' checkpoint (it asks for the preset); or run 'lightunetr import-reference'.")
        raise ModelError(f"{path} is not a model bundle; choose a '<name>{BUNDLE_SUFFIX}' folder.")
    from lightunetr_core.bundle import BundleError, read_model_card

    if not os.path.isfile(os.path.join(path, CARD_FILE)):
        raise ModelError(f"{path} has no {CARD_FILE}; it is not a LightUNETR model bundle.")
    try:  # the engine's own reader and checks (no torch imported)
        card = read_model_card(path)
    except BundleError as exc:
        raise ModelError(str(exc)) from None
    if not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        raise ModelError(f"{path} has no {WEIGHTS_FILE}; the bundle is incomplete.")
    labels = [LabelSpec(int(lb["value"]), lb["name"], lb.get("color"), lb.get("terminology"))
              for lb in card.labels if int(lb["value"]) != 0]
    return ModelInfo(path=os.path.abspath(path), name=str(card.name or os.path.basename(path)),
                     description=str(card.description or ""), architecture=card.architecture,
                     patch_size=list(card.patch_size), input_channels=list(card.input_channels), labels=labels,
                     card=card.to_dict())


class ModelLibrary:
    """Bundles in a models folder. One library is shared by the Segmentation module, the Segment Editor
    effect and the Training module (see :func:`LightUNETRSegmentationLib.logic.shared_logic`), and every
    change (a model added or removed, another folder chosen) is announced to the listeners, so each
    model list is refreshed at once.
    """

    def __init__(self, folder: str | None = None):
        self._folder = os.path.abspath(folder or default_models_folder())
        self._listeners: list = []

    @property
    def folder(self) -> str:
        return self._folder

    def set_folder(self, folder: str | None) -> None:
        folder = os.path.abspath(folder or default_models_folder())
        if folder != self._folder:
            self._folder = folder
            self.notify_changed()

    # ------------------------------------------------------------------ listeners
    def add_listener(self, callback) -> None:
        """``callback()`` is called after every change of the library (on the thread that changed it)."""
        if callback not in self._listeners:
            self._listeners.append(callback)

    def remove_listener(self, callback) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def notify_changed(self) -> None:
        """Tell every listener the library changed (also called by the jobs that write bundles into it)."""
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:  # a listener (a widget being destroyed) must not break the library
                logger.exception("LightUNETR: model library listener failed")

    # ------------------------------------------------------------------ content
    def discover(self) -> tuple[list[ModelInfo], list[str]]:
        """(usable models sorted by name, messages about folders that are not usable bundles)."""
        models, problems = [], []
        if not os.path.isdir(self.folder):
            return models, problems
        for entry in sorted(os.listdir(self.folder)):
            full = os.path.join(self.folder, entry)
            if entry.startswith(".") or not os.path.isdir(full):
                continue
            if not entry.endswith(BUNDLE_SUFFIX) and not os.path.exists(os.path.join(full, CARD_FILE)):
                continue
            try:
                models.append(read_model_info(full))
            except ModelError as exc:
                problems.append(str(exc))
        models.sort(key=lambda m: m.name.lower())
        return models, problems

    def find(self, name_or_path: str) -> ModelInfo:
        if os.path.exists(name_or_path):
            return read_model_info(name_or_path)
        models, _ = self.discover()
        for m in models:
            if name_or_path in (m.name, os.path.basename(m.path), os.path.basename(m.path)[: -len(BUNDLE_SUFFIX)]):
                return m
        names = ", ".join(m.name for m in models) or "none"
        raise ModelError(f"No model named '{name_or_path}' in {self.folder} (available: {names}). "
                         "Add one with 'Add model...'.")

    def contains(self, info: ModelInfo) -> bool:
        return os.path.dirname(os.path.abspath(info.path)) == self.folder

    def add(self, source: str, overwrite: bool = False) -> ModelInfo:
        """Copy a bundle folder (or the folder of a ``model_card.json``), or unpack a zipped bundle
        (``lightunetr export-bundle``), into the models folder. The copy is made under a hidden temporary
        name, checked (card, weights SHA-256) and renamed into place only when complete, so the folder never
        holds a half-copied or damaged bundle; a replaced bundle is moved aside first and removed last.
        An authors' ``.pth`` checkpoint needs a conversion job instead (:mod:`.modelinstall`)."""
        from lightunetr_core.bundle import BundleError, extract_bundle_zip, verify_bundle_files

        if os.fspath(source).lower().endswith(".zip") and os.path.isfile(source):
            try:
                target = extract_bundle_zip(source, self.folder, overwrite=overwrite)
            except BundleError as exc:
                raise ModelError(str(exc)) from None
            self.notify_changed()
            return read_model_info(os.fspath(target))
        info = read_model_info(source)
        base = os.path.basename(info.path.rstrip(os.sep))
        if not base.endswith(BUNDLE_SUFFIX):
            base += BUNDLE_SUFFIX
        os.makedirs(self.folder, exist_ok=True)
        target = os.path.join(self.folder, base)
        if os.path.abspath(target) == info.path:
            return info
        if os.path.exists(target) and not overwrite:
            raise ModelError(f"A model '{base}' is already installed in {self.folder}; remove it or allow replacing it.")
        with atomic_folder(target) as tmp:  # visible only once complete and checked
            tmp.rmdir()  # copytree makes it, with the source's permissions
            shutil.copytree(info.path, tmp)
            read_model_info(str(tmp))
            try:
                verify_bundle_files(tmp)
            except BundleError as exc:
                raise ModelError(f"{info.path}: {exc}") from None
        self.notify_changed()
        return read_model_info(target)

    def remove(self, name_or_path: str) -> None:
        """Delete a bundle of the models folder (moved to a hidden name first, so a failed delete never
        leaves a half bundle that looks usable)."""
        m = self.find(name_or_path)
        if not self.contains(m):
            raise ModelError(f"{m.path} is not in the models folder {self.folder}; not removing it.")
        trash = os.path.join(self.folder, f".removed-{uuid.uuid4().hex[:8]}-{os.path.basename(m.path)}")
        os.replace(m.path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        self.notify_changed()
