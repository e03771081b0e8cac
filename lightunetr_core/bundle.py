"""Model bundles: a folder ``<name>.lightunetr/`` with ``model.safetensors`` and ``model_card.json``.

The card (indented JSON, readable by a person) says what the model segments and how to feed it:
architecture and its constructor arguments, patch size, preprocessing plan, input channels, labels
(value, name, colour, terminology) and provenance. ``weights_sha256`` is the SHA-256 of
``model.safetensors``; :func:`load_bundle` refuses a bundle whose weights do not match it, a card of
a newer format version, and anything that is not safetensors (no pickle is ever unpickled).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lightunetr_core.atomic import atomic_folder
from lightunetr_core.storage import sha256_file
from lightunetr_core.vocabulary import InputError

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "BUNDLE_SUFFIX",
    "WEIGHTS_FILE",
    "CARD_FILE",
    "BundleError",
    "ModelCard",
    "LoadedBundle",
    "save_bundle",
    "load_bundle",
    "read_model_card",
    "sha256_file",
    "default_labels",
    "default_models_folder",
    "verify_bundle_files",
    "export_bundle_zip",
    "extract_bundle_zip",
]

BUNDLE_FORMAT_VERSION = 1
BUNDLE_SUFFIX = ".lightunetr"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"

#: Colours for labels 1.. when none are given (Slicer-like, 0..1).
class BundleError(InputError):
    """A bundle cannot be saved or loaded; the message names the problem and the fix."""


def default_models_folder() -> str:
    """The model library folder shared by the command line and the Slicer modules:
    ``$LIGHTUNETR_MODELS_DIR`` or ``~/.lightunetr/models``."""
    return os.environ.get("LIGHTUNETR_MODELS_DIR") or os.path.join(os.path.expanduser("~"), ".lightunetr", "models")


def default_labels(names: Sequence[str]) -> list[dict]:
    """``["background", "liver", ...]`` → label dicts with values 0.., colours and terminology codes
    (:mod:`lightunetr_core.terminology`: SNOMED CT for known structures)."""
    from lightunetr_core.terminology import label_entry

    return [label_entry(value, name) for value, name in enumerate(names)]


def _pretty_json(value: Any, indent: int = 0) -> str:
    """Indented JSON with short lists of scalars (sizes, colours) kept on one line."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_pretty_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            return json.dumps(list(value), ensure_ascii=False)
        items = [f"{inner}{_pretty_json(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


@dataclass
class ModelCard:
    """Everything needed to use a model, stored as ``model_card.json``.

    ``architecture_args`` are the keyword arguments of :func:`lightunetr_core.models.build_model`
    (``in_channels``, ``num_classes``, ``patch_size`` for Light-UNETR, ...). ``preprocessing`` is a
    :class:`~lightunetr_core.data.preprocessing.PreprocessingPlan` as a dict. ``labels`` lists
    ``{"value", "name", "color": [r, g, b] 0..1, "terminology": optional}``, value 0 = background,
    one per network output class in order. ``provenance``: recipe, labeled/unlabeled counts,
    iterations, validation metrics, code version, date, source (free-form dict). ``version`` (of this
    model, e.g. "1.0"), ``license`` (as published), ``authors``, ``citation`` (text or BibTeX) and
    ``changelog`` (list of ``{"version", "date", "changes"}``) say what the model is and may be used for.
    """

    name: str
    architecture: str
    architecture_args: dict
    patch_size: list[int]
    preprocessing: dict
    input_channels: list[str]
    labels: list[dict]
    description: str = ""
    version: str = ""
    license: str = ""
    authors: str = ""
    citation: str = ""
    changelog: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    weights_sha256: str = ""
    format_version: int = BUNDLE_FORMAT_VERSION

    # -- validation -------------------------------------------------------------------------------------
    def validate(self) -> None:
        from lightunetr_core.data.preprocessing import PreprocessingPlan
        from lightunetr_core.vocabulary import ARCHITECTURES

        if self.architecture not in ARCHITECTURES:
            raise BundleError(f"model card: unknown architecture {self.architecture!r}; "
                              f"expected one of {', '.join(ARCHITECTURES)}")
        if len(self.patch_size) != 3 or any(int(s) <= 0 or int(s) % 16 for s in self.patch_size):
            raise BundleError(f"model card: patch_size {self.patch_size} must be three multiples of 16")
        try:
            plan = PreprocessingPlan.from_dict(self.preprocessing)
        except (TypeError, ValueError, KeyError) as exc:
            raise BundleError(f"model card: invalid preprocessing plan: {exc}") from None
        if plan.channels != len(self.input_channels):
            raise BundleError(f"model card: {len(self.input_channels)} input channel(s) {self.input_channels} but "
                              f"{plan.channels} normalization(s) in the preprocessing plan; give one per channel")
        grid = self.architecture_args.get("patch_size")  # Light-UNETR's position embedding is built for its patch
        if grid is not None and [int(g) for g in grid] != [int(p) for p in self.patch_size]:
            raise BundleError(f"model card: the network is built for patch {list(grid)} (architecture_args) but the "
                              f"card's patch_size is {list(self.patch_size)}; they must be the same")
        in_ch = self.architecture_args.get("in_channels")
        if in_ch is not None and int(in_ch) != len(self.input_channels):
            raise BundleError(f"model card: architecture has in_channels={in_ch} but input_channels lists "
                              f"{len(self.input_channels)}")
        values = [int(lb.get("value", -1)) for lb in self.labels]
        if values != list(range(len(values))) or not values:
            raise BundleError(f"model card: label values must be 0, 1, ..., K-1 in order (0 = background), got {values}")
        num_classes = self.architecture_args.get("num_classes")
        if num_classes is not None and int(num_classes) != len(self.labels):
            raise BundleError(f"model card: network has {num_classes} output classes but {len(self.labels)} labels "
                              "are listed; give one label per class, background first")
        for lb in self.labels:
            color = lb.get("color", [0.5, 0.5, 0.5])
            if len(color) != 3 or not all(0.0 <= float(c) <= 1.0 for c in color):
                raise BundleError(f"model card: label {lb.get('name')!r} colour {color} must be [r, g, b] in 0..1")

    @property
    def plan(self):
        from lightunetr_core.data.preprocessing import PreprocessingPlan

        return PreprocessingPlan.from_dict(self.preprocessing)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def label_names(self) -> list[str]:
        return [str(lb["name"]) for lb in self.labels]

    def to_dict(self) -> dict:
        data = asdict(self)
        order = ["format_version", "name", "description", "version", "license", "authors", "citation", "changelog",
                 "architecture", "architecture_args", "patch_size", "preprocessing", "input_channels", "labels",
                 "provenance", "weights_sha256"]
        return {k: data[k] for k in order}

    def to_json(self) -> str:
        return _pretty_json(self.to_dict()) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model card") -> "ModelCard":
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: not a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise BundleError(f"{where}: missing or invalid format_version {version!r}")
        if version > BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"{where}: bundle format version {version} is newer than this lightunetr supports "
                f"({BUNDLE_FORMAT_VERSION}). Update lightunetr-core (pip install -U lightunetr-core) to load it."
            )
        required = ["name", "architecture", "architecture_args", "patch_size", "preprocessing",
                    "input_channels", "labels"]
        missing = [k for k in required if k not in data]
        if missing:
            raise BundleError(f"{where}: missing field(s) {', '.join(missing)}")
        kwargs = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        kwargs["patch_size"] = [int(s) for s in kwargs["patch_size"]]
        return cls(**kwargs)


@dataclass
class LoadedBundle:
    """A loaded bundle: ``model`` (in eval mode, on the requested device), its ``card`` and ``path``."""

    model: Any
    card: ModelCard
    path: Path

    @property
    def device(self):
        return next(self.model.parameters()).device


def _check_model_matches_card(model, card: ModelCard) -> None:
    from lightunetr_core.models import build_model

    try:
        reference = build_model(card.architecture, **card.architecture_args)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"model card: cannot build {card.architecture} with {card.architecture_args}: {exc}") from None
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if expected != actual:
        diff = sorted(set(expected.items()) ^ set(actual.items()))[:3]
        raise BundleError(
            "the model does not match the card's architecture/architecture_args (the bundle could not be "
            f"loaded again); first differences: {diff}. Put the model's constructor arguments in architecture_args."
        )


def save_bundle(path: str | os.PathLike, model, card: ModelCard, overwrite: bool = False) -> Path:
    """Write ``model`` and ``card`` as a bundle folder (``.lightunetr`` is appended if missing).

    The folder is assembled under a temporary name next to the target and renamed into place, so a
    reader never sees a half-written bundle. ``card.weights_sha256`` is filled in (the passed card is
    updated). Raises :class:`BundleError` if the folder exists (unless ``overwrite``) or the card
    does not describe the model.
    """
    import torch
    from safetensors.torch import save_file

    target = Path(path)
    if not target.name.endswith(BUNDLE_SUFFIX):
        target = target.with_name(target.name + BUNDLE_SUFFIX)
    if target.exists() and not overwrite:
        raise BundleError(f"{target}: bundle already exists. Choose another name or pass overwrite=True (--overwrite).")
    card.format_version = BUNDLE_FORMAT_VERSION
    card.validate()
    _check_model_matches_card(model, card)
    if not card.provenance.get("date"):
        card.provenance["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if not card.provenance.get("code_version"):
        from lightunetr_core import __version__

        card.provenance["code_version"] = __version__

    with atomic_folder(target) as tmp:
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()
                 if isinstance(v, torch.Tensor)}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "lightunetr_format_version": str(BUNDLE_FORMAT_VERSION)})
        card.weights_sha256 = sha256_file(tmp / WEIGHTS_FILE)
        (tmp / CARD_FILE).write_text(card.to_json(), encoding="utf-8")
    return target


def _read_card_json(folder: Path) -> Any:
    """The parsed ``model_card.json`` of a bundle folder (the one place that reads the file)."""
    card_path = folder / CARD_FILE
    try:
        return json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{folder}: no {CARD_FILE}; this folder is not a LightUNETR bundle.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{card_path}: not valid JSON ({exc}); the bundle is damaged, download or export it again.") from None


def read_model_card(path: str | os.PathLike) -> ModelCard:
    """Read and validate ``model_card.json`` of a bundle (no weights are touched; no torch is imported)."""
    folder = _bundle_folder(Path(path))
    card = ModelCard.from_dict(_read_card_json(folder), where=str(folder / CARD_FILE))
    card.validate()
    return card


_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")


def _bundle_folder(path: Path) -> Path:
    if not path.exists():
        raise BundleError(f"{path}: model bundle not found. Pass the path of a '<name>{BUNDLE_SUFFIX}' folder.")
    if path.is_file():
        if path.name in (CARD_FILE, WEIGHTS_FILE):
            return path.parent
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            raise BundleError(
                f"{path}: this is a PyTorch checkpoint (pickle), not a LightUNETR bundle; pickles are never "
                "loaded because they can run code. Convert an authors' checkpoint with "
                "'lightunetr import-reference CHECKPOINT ... -o NAME.lightunetr'."
            )
        raise BundleError(f"{path}: not a bundle; pass the '<name>{BUNDLE_SUFFIX}' folder.")
    return path


def load_bundle(path: str | os.PathLike, device: str | Any = "cpu") -> LoadedBundle:
    """Load a bundle: check the card, the weights' SHA-256, build the network, load weights, ``eval()``.

    Raises:
        BundleError: missing files, damaged or newer-format card, hash mismatch (corrupted or altered
            weights), weights that are not safetensors (e.g. a pickle), or weights not matching the card.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lightunetr_core.models import build_model

    folder = _bundle_folder(Path(path))
    card = read_model_card(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{folder}: {WEIGHTS_FILE} is missing; the bundle is incomplete.")
    with open(weights, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" or head == b"PK":
        raise BundleError(
            f"{weights}: the weights are a pickle/zip (torch.save) file, not safetensors; refusing to load it "
            "because unpickling can run code. Re-create the bundle with save_bundle or 'lightunetr import-reference'."
        )
    digest = sha256_file(weights)
    if not card.weights_sha256:
        raise BundleError(f"{folder / CARD_FILE}: weights_sha256 is missing; cannot verify the weights.")
    if digest != card.weights_sha256:
        raise BundleError(
            f"{weights}: SHA-256 {digest[:16]}… does not match the model card ({card.weights_sha256[:16]}…): "
            "the weights are corrupted or were changed. Download/copy the bundle again."
        )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{weights}: not a valid safetensors file ({exc}); the bundle is damaged.") from None
    try:
        model = build_model(card.architecture, **card.architecture_args)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{folder / CARD_FILE}: cannot build {card.architecture} with {card.architecture_args}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{weights}: weights do not fit the card's architecture ({str(exc).splitlines()[0]}).") from None
    if getattr(model, "num_classes", len(card.labels)) != len(card.labels):
        raise BundleError(f"{folder}: network has {model.num_classes} classes but the card lists {len(card.labels)} labels")
    model.eval()
    model.to(torch.device(device) if not isinstance(device, torch.device) else device)
    return LoadedBundle(model=model, card=card, path=folder)


# ---------------------------------------------------------------------------------------------- one-file bundles
#: Largest card accepted from a zip (a card is a few kB; a zip bomb is not a card).
_MAX_CARD_BYTES = 1 << 20


def verify_bundle_files(folder: str | os.PathLike) -> dict:
    """Check a bundle without torch: the card is JSON with a ``weights_sha256`` that the weights have.
    Returns the card as a dict. Raises :class:`BundleError`."""
    folder = Path(folder)
    card = _read_card_json(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{folder}: {WEIGHTS_FILE} is missing; the bundle is incomplete.")
    expected = card.get("weights_sha256") if isinstance(card, dict) else None
    if not expected or sha256_file(weights) != expected:
        raise BundleError(f"{weights}: SHA-256 does not match the model card: the weights are corrupted or were changed.")
    return card


def export_bundle_zip(bundle: str | os.PathLike, zip_path: str | os.PathLike, overwrite: bool = False) -> Path:
    """One ``.zip`` file holding ``<name>.lightunetr/model_card.json`` and ``model.safetensors`` (checked first),
    written atomically."""
    import zipfile

    from lightunetr_core.atomic import atomic_output

    folder = _bundle_folder(Path(bundle))
    verify_bundle_files(folder)
    zip_path = Path(zip_path)
    if zip_path.suffix.lower() != ".zip":
        raise BundleError(f"{zip_path}: the archive name must end in .zip")
    if zip_path.exists() and not overwrite:
        raise BundleError(f"{zip_path}: already exists; choose another name or pass --overwrite")
    top = folder.name if folder.name.endswith(BUNDLE_SUFFIX) else folder.name + BUNDLE_SUFFIX
    with atomic_output(zip_path, "wb") as handle:
        with zipfile.ZipFile(handle, "w") as z:
            z.write(folder / CARD_FILE, f"{top}/{CARD_FILE}", compress_type=zipfile.ZIP_DEFLATED)
            z.write(folder / WEIGHTS_FILE, f"{top}/{WEIGHTS_FILE}", compress_type=zipfile.ZIP_STORED)
    return zip_path


def extract_bundle_zip(zip_path: str | os.PathLike, dest_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Unpack a zipped bundle (:func:`export_bundle_zip`) into ``dest_dir`` and return its folder.

    Only ``<name>.lightunetr/model_card.json`` and ``model.safetensors`` are taken (any other member, an
    absolute path or ``..`` is refused); they are extracted under a hidden name, checked (card JSON, weights
    SHA-256) and renamed into place, so ``dest_dir`` never holds a half-unpacked or unverified bundle."""
    import zipfile

    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    try:
        z = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{zip_path}: not a readable zip file ({exc}); export the bundle again.") from None
    with z:
        names = [i for i in z.infolist() if not i.is_dir()]
        tops = {PurePosixPath(i.filename).parts[0] for i in names if PurePosixPath(i.filename).parts}
        expected = {CARD_FILE, WEIGHTS_FILE}
        if (len(tops) != 1 or not next(iter(tops)).endswith(BUNDLE_SUFFIX)
                or {PurePosixPath(i.filename).name for i in names} != expected or len(names) != 2
                or any(len(PurePosixPath(i.filename).parts) != 2 or i.filename.startswith("/") or ".." in i.filename
                       for i in names)):
            raise BundleError(f"{zip_path}: not a zipped LightUNETR bundle (expected exactly <name>{BUNDLE_SUFFIX}/"
                              f"{CARD_FILE} and {WEIGHTS_FILE}; found {[i.filename for i in names][:5]})")
        top = next(iter(tops))
        card_info = next(i for i in names if i.filename.endswith(CARD_FILE))
        if card_info.file_size > _MAX_CARD_BYTES:
            raise BundleError(f"{zip_path}: the model card is {card_info.file_size} bytes; not a model card.")
        target = dest_dir / top
        if target.exists() and not overwrite:
            raise BundleError(f"{target}: a bundle of this name already exists; remove it or allow replacing it.")
        try:
            with atomic_folder(target) as tmp:
                for info in names:
                    with z.open(info) as src, open(tmp / PurePosixPath(info.filename).name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                verify_bundle_files(tmp)
        except zipfile.BadZipFile as exc:  # a member's CRC does not match: the archive is damaged
            raise BundleError(f"{zip_path}: the archive is damaged ({exc}); export the bundle again.") from None
    return target
