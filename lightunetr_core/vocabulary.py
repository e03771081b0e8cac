"""The names LightUNETR's parts share: architectures, recipes, devices, case roles and their folders, image
file endings, and the base class of a user's bad input.

Standard library only, so the Slicer modules import it without torch, MONAI or SimpleITK.
"""

from __future__ import annotations

#: Networks by name (``lightunetr_core.models.build_model``, the model card's ``architecture``).
ARCHITECTURES = ("lightunetr", "lightunetr_large")

#: Training recipes: the command line's name → the engine's (``lightunetr_core.training.recipes``).
#: ``cse-reference`` is CSE as the authors' code trains it, ``cse-paper`` as the paper prints it.
RECIPES = {"cse-reference": "reference", "cse-paper": "paper", "supervised": "supervised"}

#: Devices the engine accepts (``cuda:N`` too); "auto" picks CUDA, then Apple's MPS, then the CPU.
DEVICES = ("auto", "cpu", "cuda", "mps")

#: What a case is for in a dataset.
ROLES = ("labeled", "unlabeled", "validation", "test")
#: Roles whose cases must have a label.
ROLES_NEEDING_LABEL = ("labeled", "validation")
#: Dataset folder layout (nnU-Net's names): role → (image folders read, label folders read); the first
#: name of each is the one written (demo data, Slicer's training export).
ROLE_FOLDERS = {
    "labeled": (("imagesTr",), ("labelsTr",)),
    "unlabeled": (("imagesUnlabeled", "imagesTrUnlabeled", "imagesUnlabelled"), ()),
    "validation": (("imagesVal",), ("labelsVal",)),
    "test": (("imagesTs",), ("labelsTs",)),
}

#: Where a dataset writer keeps the labels of its unlabelled cases when asked to keep them aside for a benchmark
#: (``lightunetr demo-data --keep-unlabeled-labels``; benchmarks/cse_gain.py); training never reads them.
HELD_ASIDE_LABELS = "labelsUnlabeled"

#: Image file endings read (besides DICOM folders), longest first so ".nii.gz" wins over ".gz".
IMAGE_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Endings written (single-file formats, so an atomic rename moves everything).
WRITE_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")


class InputError(ValueError):
    """The user's input cannot be used (a file, a setting, a dataset); the message names the problem and
    what to do. The command line answers it with exit code 2 (``lightunetr_core.jobs.EXIT_BAD_INPUT``);
    any other exception is a bug (exit 1)."""


def role_folders(role: str) -> tuple[str, str | None]:
    """The (image folder, label folder or None) a dataset writer uses for ``role``."""
    images, labels = ROLE_FOLDERS[role]
    return images[0], (labels[0] if labels else None)


def image_extension(name: str) -> str | None:
    """The recognised image ending of a file name (".nii.gz", ".seg.nrrd", ...), or None."""
    lower = name.lower()
    return next((ext for ext in IMAGE_EXTENSIONS if lower.endswith(ext)), None)


def strip_image_extension(name: str) -> str | None:
    """``"case_0000.nii.gz"`` → ``"case_0000"``; None when the name has no image ending."""
    ext = image_extension(name)
    return name[: -len(ext)] if ext else None
