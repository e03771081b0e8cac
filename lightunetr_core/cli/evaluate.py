"""``lightunetr evaluate``: per-case, per-class segmentation metrics (mm) of label maps against references.

Usage::

    lightunetr evaluate --prediction pred1.nii.gz pred2.nii.gz --reference ref1.nii.gz ref2.nii.gz \\
        --labels 1 2 --label-names liver tumour --json metrics.json --csv metrics.csv
    lightunetr evaluate --prediction predictions/ --reference labels/ --csv metrics.csv

With two folders, files are paired by name (extensions ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``,
``.mhd`` ... ignored). Prediction and reference must lie on the same voxel grid (size, spacing,
origin, direction); metrics use the physical spacing (mm). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import time
from pathlib import Path

from lightunetr_core.atomic import write_text_atomic
from lightunetr_core.vocabulary import IMAGE_EXTENSIONS, InputError

#: evaluate also reads the label formats other tools write (SimpleITK reads them).
IMAGE_SUFFIXES = IMAGE_EXTENSIONS + (".vtk", ".tif", ".tiff")

CSV_COLUMNS = [
    "case",
    "label",
    "name",
    "status",
    "dice",
    "jaccard",
    "hd95_mm",
    "hd_mm",
    "assd_mm",
    "prediction_voxels",
    "reference_voxels",
    "prediction_volume_ml",
    "reference_volume_ml",
]


class BadInput(InputError):
    """Input rejected before any output is written; the message says what to fix."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice, Jaccard, HD95 and ASSD (mm) of predicted label maps against reference label maps.",
        description=(
            "Compare predicted label maps with reference label maps on the same voxel grid. Distances are in "
            "millimetres (voxel spacing applied). Classes missing from a prediction and/or a reference are "
            "reported with a status (prediction_empty, label_empty, both_empty) and NaN distances, not scored 0."
        ),
    )
    parser.add_argument("--prediction", "-p", nargs="+", required=True, metavar="P",
                        help="predicted label map files, or one folder")
    parser.add_argument("--reference", "-r", nargs="+", required=True, metavar="R",
                        help="reference label map files (same order), or one folder (files paired by name)")
    parser.add_argument("--labels", nargs="+", type=int, metavar="N",
                        help="labels to evaluate (default: every non-zero label found in any file)")
    parser.add_argument("--label-names", nargs="+", metavar="NAME",
                        help="names for --labels (same order), or for labels 1..N if --labels is not given")
    parser.add_argument("--percentile", type=float, default=95.0,
                        help="Hausdorff distance percentile (default 95)")
    parser.add_argument("--json", dest="json_path", metavar="OUT.json", help="write all results as JSON")
    parser.add_argument("--csv", dest="csv_path", metavar="OUT.csv",
                        help="write one row per case and class, plus per-class mean rows (case = 'mean')")
    parser.add_argument("--events", choices=("human", "json"), default="human",
                        help="human-readable progress on stderr, or JSON-lines events on stdout")
    parser.add_argument("--cancel-file", metavar="FILE", help="stop cleanly when this file appears")
    parser.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------- pairs
def case_name(path: str | os.PathLike) -> str:
    """File name without its image extension (``case_001.nii.gz`` → ``case_001``)."""
    name = Path(path).name
    return next((name[: -len(s)] for s in IMAGE_SUFFIXES if name.lower().endswith(s)), Path(name).stem)


def _image_files(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.lower().endswith(".raw"):
            name = case_name(path)
            if name in files:
                raise BadInput(f"folder {folder} has two images named {name!r} ({files[name].name}, {path.name}); "
                               "keep one per case")
            files[name] = path
    return files


def pair_inputs(predictions: list[str], references: list[str]) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Returns ``[(case, prediction, reference)]`` and warnings (predictions without a reference)."""
    warnings: list[str] = []
    if len(predictions) == 1 and len(references) == 1 and Path(predictions[0]).is_dir() != Path(references[0]).is_dir():
        raise BadInput("give either two folders or the same number of files for --prediction and --reference "
                       f"(got {predictions[0]} and {references[0]})")
    if len(predictions) == 1 and len(references) == 1 and Path(predictions[0]).is_dir():
        pred_dir, ref_dir = Path(predictions[0]), Path(references[0])
        pred_files, ref_files = _image_files(pred_dir), _image_files(ref_dir)
        if not ref_files:
            raise BadInput(f"no reference images found in {ref_dir}")
        missing = sorted(set(ref_files) - set(pred_files))
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise BadInput(f"{len(missing)} reference case(s) have no prediction in {pred_dir}: {shown}. "
                           "Files are paired by name without extension; rename them or pass the files explicitly.")
        extra = sorted(set(pred_files) - set(ref_files))
        if extra:
            warnings.append(f"ignoring {len(extra)} prediction(s) without a reference: {', '.join(extra[:10])}")
        return [(name, pred_files[name], ref_files[name]) for name in sorted(ref_files)], warnings
    if len(predictions) != len(references):
        raise BadInput(f"{len(predictions)} prediction file(s) but {len(references)} reference file(s); "
                       "give one reference per prediction, in the same order")
    pairs = []
    for pred, ref in zip(predictions, references):
        for label, path in (("prediction", pred), ("reference", ref)):
            if not Path(path).is_file():
                raise BadInput(f"{label} file not found: {path}")
        pairs.append((case_name(pred), Path(pred), Path(ref)))
    names = [name for name, _, _ in pairs]
    if len(set(names)) != len(names):  # same file names in different folders: use the full path
        pairs = [(str(pred), pred, ref) for _, pred, ref in pairs]
    return pairs, warnings


# ----------------------------------------------------------------------------------------------- reading
def read_label_map(path: Path):
    """Read a label map with SimpleITK → (image, array in (z, y, x) order)."""
    import numpy as np
    import SimpleITK as sitk

    from lightunetr_core.data.integrity import IncompleteImageError, check_complete

    try:
        check_complete(path)  # SimpleITK zero-fills some truncated files without an error
        image = sitk.ReadImage(str(path))
    except IncompleteImageError as exc:
        raise BadInput(str(exc)) from None
    except RuntimeError as exc:
        raise BadInput(f"cannot read {path}: {str(exc).strip().splitlines()[-1]}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise BadInput(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; a label map "
                       "has one (export a labelmap volume, not a multi-layer segmentation or RGB image)")
    if image.GetDimension() != 3:
        raise BadInput(f"{path} is {image.GetDimension()}-D; evaluate expects 3-D label maps")
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise BadInput(f"{path} holds non-integer values: it looks like a probability map; "
                           "evaluate needs label maps (threshold/argmax first)")
        array = array.astype(np.int64)
    if array.size and int(array.min()) < 0:
        negative = sorted({int(v) for v in np.unique(array) if v < 0})
        raise BadInput(f"{path} holds negative label value(s) {negative[:10]}; label maps use 0 for the background "
                       "and 1..K for the classes (train refuses them too). Remap the values first")
    return image, array


def check_same_grid(pred_image, ref_image, pred_path: Path, ref_path: Path) -> None:
    """Raise :class:`BadInput` naming the difference if the two images are not on the same voxel grid."""
    from lightunetr_core.data.geometry import Geometry

    problems = Geometry.of(pred_image).differences(Geometry.of(ref_image))
    if problems:
        raise BadInput(
            f"prediction {pred_path} and reference {ref_path} are not on the same voxel grid: "
            + "; ".join(problems)
            + ". Resample the prediction onto the reference grid (nearest neighbour), e.g. in Slicer "
            "'Resample Image (BRAINS)' with the reference as reference volume, or sitk.Resample(pred, ref, "
            "sitk.Transform(), sitk.sitkNearestNeighbor)."
        )


# ----------------------------------------------------------------------------------------------- writing
def _clean(value):
    """JSON-safe values: NaN/inf → None, numpy scalars → Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and rename it into place."""
    write_text_atomic(path, text)


def _format_number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def results_to_csv(cases: list[dict], summary: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for case in cases:
        for item in case["classes"]:
            writer.writerow([case["case"]] + [_format_number(item[key]) for key in CSV_COLUMNS[1:]])
    for label, entry in summary["per_class"].items():
        row = {"case": "mean", "label": label, "name": entry["name"],
               "status": ";".join(f"{k}={v}" for k, v in entry["counts"].items())}
        for key in ("dice", "jaccard", "hd95_mm", "hd_mm", "assd_mm"):
            row[key] = entry[key]["mean"]
        writer.writerow([_format_number(row.get(key)) for key in CSV_COLUMNS])
    return buffer.getvalue()


def _parse_names(args) -> tuple[list[int] | None, dict[int, str]]:
    labels = args.labels
    if labels is not None and any(label <= 0 for label in labels):
        raise BadInput(f"--labels must be positive (0 is background): {labels}")
    names: dict[int, str] = {}
    if args.label_names:
        targets = labels if labels is not None else list(range(1, len(args.label_names) + 1))
        if len(targets) != len(args.label_names):
            raise BadInput(f"{len(args.label_names)} --label-names for {len(targets)} --labels; give one name per label")
        names = dict(zip(targets, args.label_names))
        if labels is None:
            labels = targets
    return labels, names


# ----------------------------------------------------------------------------------------------- job
def evaluate_files(pairs, labels=None, label_names=None, percentile=95.0, events=None, cancel=None) -> dict:
    """Evaluate ``[(case, prediction_path, reference_path)]``; returns the JSON-ready result dict."""
    import numpy as np

    from lightunetr_core.metrics import ClassMetrics, binary_metrics, compute_metrics, summarize

    label_names = dict(label_names or {})
    cases = []
    per_case_metrics: list[list[ClassMetrics]] = []
    start = time.perf_counter()
    for index, (name, pred_path, ref_path) in enumerate(pairs):
        if cancel is not None:
            cancel.raise_if_cancelled()
        pred_image, pred = read_label_map(pred_path)
        ref_image, ref = read_label_map(ref_path)
        check_same_grid(pred_image, ref_image, pred_path, ref_path)
        spacing = ref_image.GetSpacing()[::-1]  # array axes are (z, y, x)
        metrics = compute_metrics(pred, ref, spacing=spacing, labels=labels, label_names=label_names,
                                  percentile=percentile)
        per_case_metrics.append(metrics)
        cases.append({"case": name, "prediction": str(pred_path), "reference": str(ref_path),
                      "size": list(ref_image.GetSize()), "spacing_mm": list(ref_image.GetSpacing())})
        if events is not None:
            elapsed = time.perf_counter() - start
            events.progress(index + 1, len(pairs), rate=(index + 1) / elapsed if elapsed > 0 else None, case=name)
    if labels is None:
        # Labels found only in some cases are "both_empty" in the others (known without re-reading).
        all_labels = sorted({m.label for metrics in per_case_metrics for m in metrics})
        for case_index, metrics in enumerate(per_case_metrics):
            present = {m.label for m in metrics}
            for label in all_labels:
                if label not in present:
                    empty = np.zeros((1, 1, 1), dtype=bool)
                    values = binary_metrics(empty, empty)
                    metrics.append(ClassMetrics(label=label, name=label_names.get(label, f"label_{label}"), **values))
            metrics.sort(key=lambda m: m.label)
    for case, metrics in zip(cases, per_case_metrics):
        case["classes"] = [m.to_dict() for m in metrics]
    summary = summarize(per_case_metrics)
    return {
        "schema": 1,
        "units": {"distances": "mm", "volumes": "ml"},
        "definitions": {
            "hd95_mm": f"max of the two directed {percentile:g}th-percentile surface distances",
            "hd_mm": "Hausdorff distance (max of directed maxima)",
            "assd_mm": "mean of the pooled surface distances in both directions",
            "surface": "mask minus its 6-connected erosion",
            "status": "ok | both_empty | prediction_empty | label_empty (distances NaN=null unless ok)",
        },
        "percentile": percentile,
        "cases": cases,
        "summary": summary,
    }


def _summary_table(result: dict) -> str:
    lines = [f"{'label':>6} {'name':<16} {'dice':>7} {'jaccard':>7} {'hd95_mm':>8} {'assd_mm':>8}  statuses"]
    for label, entry in result["summary"]["per_class"].items():
        def fmt(key, width):
            value = entry[key]["mean"]
            return f"{value:{width}.3f}" if isinstance(value, float) and math.isfinite(value) else f"{'nan':>{width}}"
        counts = ", ".join(f"{k}={v}" for k, v in entry["counts"].items())
        lines.append(f"{label:>6} {entry['name'][:16]:<16} {fmt('dice', 7)} {fmt('jaccard', 7)} "
                     f"{fmt('hd95_mm', 8)} {fmt('assd_mm', 8)}  {counts}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lightunetr_core.jobs import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, CancelToken, EventWriter, JobCancelled

    events = EventWriter.for_cli("evaluate", args.events)
    cancel = CancelToken(args.cancel_file)
    cancel.install_signal_handlers()
    start = time.perf_counter()
    try:
        labels, names = _parse_names(args)
        if not 0 < args.percentile <= 100:
            raise BadInput(f"--percentile must be in (0, 100], got {args.percentile}")
        pairs, warnings = pair_inputs(args.prediction, args.reference)
        events.started(total=len(pairs), config={"labels": labels, "label_names": names, "percentile": args.percentile,
                                                 "json": args.json_path, "csv": args.csv_path})
        for warning in warnings:
            events.log(warning, level="warning")
        events.stage("evaluate", f"{len(pairs)} case(s)")
        result = evaluate_files(pairs, labels, names, args.percentile, events=events, cancel=cancel)
        # Render both outputs before writing either, then write each atomically.
        outputs = []
        if args.json_path:
            outputs.append((args.json_path, json.dumps(_clean(result), indent=2, allow_nan=False) + "\n"))
        if args.csv_path:
            outputs.append((args.csv_path, results_to_csv(result["cases"], result["summary"])))
        events.stage("write", "writing results")
        for path, text in outputs:
            write_atomic(path, text)
            events.emit("output", path=str(path), kind="metrics")
    except BadInput as exc:
        events.error(str(exc), kind="bad_input")
        return EXIT_BAD_INPUT
    except JobCancelled as exc:
        events.emit("cancelled", message=str(exc), checkpoint=None)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - reported as an event, not a traceback
        events.error(f"{type(exc).__name__}: {exc}", kind="internal")
        return EXIT_ERROR
    summary = result["summary"]
    events.emit("finished", elapsed_s=round(time.perf_counter() - start, 3), cases=len(result["cases"]),
                mean_over_classes=summary["mean_over_classes"],
                per_class={label: {k: v["mean"] if isinstance(v, dict) and "mean" in v else v for k, v in e.items()}
                           for label, e in summary["per_class"].items()})
    if args.events == "human":
        print(_summary_table(result))
    return EXIT_OK
