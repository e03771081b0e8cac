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


__all__ = [
    "LightUNETR",
    "LightUNETRLarge",
    "ARCHITECTURES",
    "build_model",
    "from_reference_state_dict",
    "check_spatial_size",
    "nearest_valid_sizes",
]
