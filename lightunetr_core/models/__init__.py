"""Networks: Light-UNETR, Light-UNETR-L, and loading of the authors' checkpoints."""

from lightunetr_core import vocabulary

from lightunetr_core.models.lightunetr import LightUNETR
from lightunetr_core.models.lightunetr_large import LightUNETRLarge
from lightunetr_core.models.reference import from_reference_state_dict
from lightunetr_core.models.size_rules import check_spatial_size, nearest_valid_sizes

ARCHITECTURES = dict(zip(vocabulary.ARCHITECTURES, (LightUNETR, LightUNETRLarge)))


def build_model(architecture: str, **kwargs):
    """Build a network by name (``"lightunetr"`` or ``"lightunetr_large"``) with constructor kwargs."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}") from None
    return cls(**kwargs)


def model_args(architecture: str, in_channels: int, num_classes: int, patch_size) -> dict:
    """The constructor arguments of a network trained on crops of ``patch_size`` (Light-UNETR's position
    embedding is built for its patch; Light-UNETR-L does not take one). A model card stores these."""
    args = {"in_channels": int(in_channels), "num_classes": int(num_classes)}
    if architecture == "lightunetr":
        args["patch_size"] = [int(p) for p in patch_size]
    return args


__all__ = [
    "LightUNETR",
    "LightUNETRLarge",
    "ARCHITECTURES",
    "build_model",
    "model_args",
    "from_reference_state_dict",
    "check_spatial_size",
    "nearest_valid_sizes",
]
