"""Image I/O, geometry (orientation, resampling) and preprocessing shared by training and inference."""

from lightunetr_core.data.geometry import (
    Geometry,
    Reorientation,
    array_to_image,
    image_to_array,
    reorient_to_ras,
    resample_onto,
    resample_to_spacing,
)
from lightunetr_core.data.io import (
    ImageReadError,
    OutputExistsError,
    inspect_image,
    read_image,
    write_image,
    write_segmentation_nrrd,
)
from lightunetr_core.data.preprocessing import (
    GeometryMismatchError,
    IntensityNormalization,
    PreprocessedCase,
    PreprocessingPlan,
    preprocess_case,
)

__all__ = [
    "Geometry",
    "Reorientation",
    "array_to_image",
    "image_to_array",
    "reorient_to_ras",
    "resample_onto",
    "resample_to_spacing",
    "ImageReadError",
    "OutputExistsError",
    "inspect_image",
    "read_image",
    "write_image",
    "write_segmentation_nrrd",
    "GeometryMismatchError",
    "IntensityNormalization",
    "PreprocessedCase",
    "PreprocessingPlan",
    "preprocess_case",
]
