"""``lightunetr segment``: segment one or more volumes with a model bundle (one model load for all)."""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from pathlib import Path

from lightunetr_core.vocabulary import IMAGE_EXTENSIONS as _IMAGE_ENDINGS
from lightunetr_core.vocabulary import InputError
from lightunetr_core.vocabulary import WRITE_EXTENSIONS, strip_image_extension

FORMATS = ("nii.gz", "nrrd", "seg.nrrd", "dicom-seg")
#: An -o that ends like this is one output file (else a folder); .dcm: a DICOM SEG.
_FILE_ENDINGS = WRITE_EXTENSIONS + (".dcm",)
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")  # nnU-Net's case_XXXX channel naming


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment volumes with a .lightunetr bundle",
        description=(
            "Segment 3-D volumes with a model bundle. Each case is one input per model channel (for a "
            "multi-channel model give the channels of a case consecutively, in the card's order). Outputs "
            "have exactly the input's grid. Exit codes: 0 ok, 1 internal error, 2 bad input (nothing "
            "written for that case), 3 cancelled."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files (.nii.gz, .nii, .nrrd, .mha, .mhd), DICOM series folders, or folders of "
                             "images (one case per file, or nnU-Net style CASE_0000.nii.gz, CASE_0001... per channel)")
    parser.add_argument("-m", "--model", required=True, help="model bundle folder (NAME.lightunetr)")
    parser.add_argument("-o", "--output", required=True,
                        help="output folder, or an output file name when segmenting a single case")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format in a folder (default nii.gz; a file name's ending wins); dicom-seg: a DICOM "
                             "Segmentation object for a DICOM series input (needs pip install 'lightunetr-core[dicom]')")
    parser.add_argument("--statistics", action="store_true",
                        help="also write CASE_statistics.csv: voxel count and volume (ml) per class")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap 0..<1 (default 0.5)")
    parser.add_argument("--stride", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="window step in voxels of the model grid instead of --overlap; the reference's dense "
                             "test: 18 18 4 (LA), 16 16 4 (Pancreas-CT), with --blend constant")
    parser.add_argument("--blend", choices=("gaussian", "constant"), default="gaussian")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, cuda:N, mps, cpu")
    parser.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
                        help="network runtime: auto (ONNX Runtime on the CPU when installed, else PyTorch), torch, "
                             "or onnxruntime (CPU; needs pip install 'lightunetr-core[onnx]'; the network is "
                             "exported to ONNX once and cached in $LIGHTUNETR_CACHE or ~/.cache/lightunetr)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch, ONNX Runtime and SimpleITK")
    parser.add_argument("--sw-batch-size", type=int, default=1, help="windows per network call (default 1)")
    parser.add_argument("--largest-component", nargs="?", const="all", choices=("all", "auto"), default=None,
                        help="keep only the largest connected component of each class (all, the default when given "
                             "alone), or of the classes the model's card names as one connected structure (auto: a "
                             "class of separate parts, such as both kidneys, keeps them)")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write class probabilities (float32 vector image, one component per class)")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write the normalised entropy map (0 = certain, 1 = uniform) and report a review "
                             "score: the mean entropy within 5 mm of the predicted structures (a 'review' event)")
    parser.add_argument("--roi", type=float, nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                        help="segment only inside this box (LPS millimetres; Slicer's RAS x,y negated)")
    parser.add_argument("--tta", action="store_true", help="test-time mirroring (4 passes, slower)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--events", choices=("human", "json"), default="human",
                        help="json: one JSON event per line on stdout (for Slicer and scripts)")
    parser.add_argument("--cancel-file", default=None, help="stop cleanly when this file appears")
    parser.set_defaults(func=run)


def _case_name(path: Path) -> str:
    return strip_image_extension(path.name) or path.name


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_IMAGE_ENDINGS))


def _folder_cases(folder: Path, channels: int) -> list[tuple[str, list[Path]]]:
    """The cases of a folder of images: one per file, or nnU-Net style ``CASE_XXXX`` files per channel."""
    groups: dict[str, dict[int, Path]] = {}
    for path in _image_files(folder):
        m = _CHANNEL.match(_case_name(path))
        name, index = (m.group(1), int(m.group(2))) if m else (_case_name(path), None)
        group = groups.setdefault(name, {})
        if index is None:
            if channels != 1:
                raise OutputPlanError(f"{path}: the model needs {channels} channels per case; name the files "
                                      f"{name}_0000, {name}_0001, ... (nnU-Net style)")
            index = 0
        if index in group:
            raise OutputPlanError(f"{folder}: case {name!r} has channel {index} twice ({group[index].name}, {path.name})")
        group[index] = path
    cases = []
    for name, group in groups.items():
        if sorted(group) != list(range(channels)):
            raise OutputPlanError(f"{folder}: case {name!r} has channel file(s) {sorted(group)} but the model needs "
                                  f"channels 0..{channels - 1} ({name}_0000 ... {name}_{channels - 1:04d})")
        cases.append((name, [group[i] for i in range(channels)]))
    return cases


def expand_inputs(inputs: list[Path], channels: int, channel_names=()) -> list[tuple[str, list[Path]]]:
    """(case name, channel paths) per case: folders of images are split into their cases; files and DICOM
    series folders are taken ``channels`` at a time, in the order given."""
    cases: list[tuple[str, list[Path]]] = []
    loose: list[Path] = []

    def flush():
        if len(loose) % channels:
            raise OutputPlanError(
                f"the model needs {channels} input channel(s) per case"
                + (f" ({', '.join(channel_names)})" if channel_names else "")
                + f" but {len(loose)} input(s) were given in a row; give the channels of each case consecutively")
        for i in range(0, len(loose), channels):
            cases.append((_case_name(loose[i]), loose[i:i + channels]))
        loose.clear()

    for path in inputs:
        if path.is_dir() and _image_files(path):
            flush()
            found = _folder_cases(path, channels)
            if not found:
                raise OutputPlanError(f"{path}: no image files")
            cases.extend(found)
        else:
            loose.append(path)
    flush()
    return cases


def _is_file_target(path: Path) -> bool:
    return path.name.lower().endswith(_FILE_ENDINGS)


def _with_suffix(path: Path, tag: str, ext: str) -> Path:
    """``out/case.nii.gz`` + ``_probabilities`` → ``out/case_probabilities.<ext>``."""
    return path.with_name(_case_name(path) + tag + ext)


class OutputPlanError(InputError):
    """The output path does not fit the inputs (e.g. a file name for several cases)."""


def plan_outputs(cases: list, output: Path, fmt: str | None, probabilities: bool, uncertainty: bool,
                 statistics: bool = False) -> list[dict]:
    """Output paths per case (``cases``: (name, channel paths) pairs, or channel path lists): ``labels``
    (+ ``probabilities`` / ``uncertainty`` / ``statistics``)."""
    cases = [c if isinstance(c, tuple) else (_case_name(c[0]), c) for c in cases]
    plans = []
    if _is_file_target(output):
        if len(cases) != 1:
            raise OutputPlanError(
                f"-o {output} is a file name but {len(cases)} cases were given; pass an output folder instead")
        labels = output
        ext_of = labels.name.lower()
        extra_ext = ".nrrd" if ext_of.endswith(".nrrd") else (".nii" if ext_of.endswith(".nii") else
                                                             ".mha" if ext_of.endswith(".mha") else ".nii.gz")
        entry = {"labels": labels}
        if probabilities:
            entry["probabilities"] = _with_suffix(labels, "_probabilities", extra_ext)
        if uncertainty:
            entry["uncertainty"] = _with_suffix(labels, "_uncertainty", extra_ext)
        if statistics:
            entry["statistics"] = _with_suffix(labels, "_statistics", ".csv")
        plans.append(entry)
        return plans
    fmt = fmt or "nii.gz"
    extra_ext = ".nrrd" if fmt in ("nrrd", "seg.nrrd") else ".nii.gz"
    labels_ext = ".dcm" if fmt == "dicom-seg" else f".{fmt}"
    seen = set()
    for name, _ in cases:
        if name in seen:
            raise OutputPlanError(f"two inputs are named {name!r}; their outputs would collide. Rename one "
                                      "or segment them separately")
        seen.add(name)
        entry = {"labels": output / f"{name}_segmentation{labels_ext}"}
        if probabilities:
            entry["probabilities"] = output / f"{name}_probabilities{extra_ext}"
        if uncertainty:
            entry["uncertainty"] = output / f"{name}_uncertainty{extra_ext}"
        if statistics:
            entry["statistics"] = output / f"{name}_statistics.csv"
        plans.append(entry)
    return plans


def _statistics_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["value", "name", "voxels", "volume_ml"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class _InputProblem(InputError):
    pass


def _preflight(args: argparse.Namespace):
    """Everything checkable without heavy work, so that a bad input writes nothing: the model card, the
    inputs, the outputs (and whether they exist). Returns ``(card, cases, outputs)``."""
    from lightunetr_core.bundle import read_model_card
    from lightunetr_core.data.io import OutputExistsError, inspect_image

    card = read_model_card(args.model)
    if args.stride is not None and not all(0 < t <= p for t, p in zip(args.stride, card.patch_size)):
        raise _InputProblem(f"--stride {tuple(args.stride)} must be between 1 and the model's patch size "
                            f"{tuple(card.patch_size)} on every axis")
    named_cases = expand_inputs([Path(p) for p in args.inputs], len(card.input_channels), card.input_channels)
    cases = [paths for _, paths in named_cases]
    for path in (p for paths in cases for p in paths):
        inspect_image(path)
    output = Path(args.output)
    if output.exists() and output.is_file() and not _is_file_target(output):
        raise _InputProblem(f"-o {output} is an existing file with an unknown ending; give a folder "
                            f"or a file name ending in {', '.join(_FILE_ENDINGS)}")
    outputs = plan_outputs(named_cases, output, args.format, args.probabilities, args.uncertainty, args.statistics)
    if any(entry["labels"].name.lower().endswith(".dcm") for entry in outputs):
        from lightunetr_core.data.dicomseg import _require_highdicom

        _require_highdicom()
        not_dicom = [str(paths[0]) for paths in cases if len(paths) != 1 or not paths[0].is_dir()]
        if not_dicom:
            raise _InputProblem(f"--format dicom-seg needs a DICOM series folder as the input of each case; "
                                f"not one: {', '.join(not_dicom[:3])}")
    if not args.overwrite:
        existing = [str(p) for entry in outputs for p in entry.values() if p.exists()]
        if existing:
            raise OutputExistsError(
                f"output file(s) already exist: {', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}. "
                "Choose another output or pass --overwrite.")
    return card, cases, outputs


def _write_case(result, out: dict, card, source: Path, overwrite: bool) -> tuple[list[Path], str, list]:
    """Write one case's files (all or none: a failure removes what this case wrote). Returns the files, the
    kind of the label output and the label statistics."""
    from lightunetr_core.atomic import atomic_output
    from lightunetr_core.data.io import write_image, write_segmentation_nrrd
    from lightunetr_core.inference.statistics import label_statistics

    written: list[Path] = []
    try:
        labels_path = out["labels"]
        name = labels_path.name.lower()
        if name.endswith(".seg.nrrd"):
            write_segmentation_nrrd(result.labels, labels_path, card.labels, overwrite=overwrite)
        elif name.endswith(".dcm"):
            from lightunetr_core.data.dicomseg import write_dicom_seg

            write_dicom_seg(result.labels, source, labels_path, card.labels, card.name, overwrite=overwrite)
        else:
            write_image(result.labels, labels_path, overwrite=overwrite)
        written.append(labels_path)
        kind = "segmentation" if name.endswith(".seg.nrrd") else "dicom-seg" if name.endswith(".dcm") else "labelmap"
        for extra in ("probabilities", "uncertainty"):
            if extra in out:
                write_image(getattr(result, extra), out[extra], overwrite=overwrite)
                written.append(out[extra])
        stats = label_statistics(result.labels, card.labels)
        if "statistics" in out:
            with atomic_output(out["statistics"], "w") as handle:
                handle.write(_statistics_csv(stats))
            written.append(out["statistics"])
    except BaseException:
        for p in written:  # no partial case output
            p.unlink(missing_ok=True)
        raise
    return written, kind, stats


def _report_case(events, case_index: int, out: dict, kind: str, card, result, stats) -> None:
    from lightunetr_core.inference.statistics import review_score

    events.emit("output", path=str(out["labels"]), kind=kind, case=case_index,
                labels={str(lb["value"]): lb["name"] for lb in card.labels})
    for extra in ("probabilities", "uncertainty", "statistics"):
        if extra in out:
            events.emit("output", path=str(out[extra]), kind=extra, case=case_index)
            if extra == "uncertainty":
                events.emit("review", case=case_index, **review_score(result.labels, result.uncertainty))
    events.emit("statistics", case=case_index, classes=stats)


def run(args: argparse.Namespace) -> int:
    from lightunetr_core.jobs import (
        EXIT_BAD_INPUT,
        EXIT_CANCELLED,
        EXIT_ERROR,
        EXIT_OK,
        CancelToken,
        EventWriter,
        JobCancelled,
    )

    events = EventWriter.for_cli("segment", args.events)
    cancel = CancelToken(args.cancel_file)
    cancel.install_signal_handlers()
    start = time.perf_counter()
    written: list[str] = []
    config = {k: v for k, v in vars(args).items() if k != "func"}
    # Light imports first: the pre-flight checks run without torch, so bad input fails fast.
    import SimpleITK as sitk

    from lightunetr_core.bundle import load_bundle
    from lightunetr_core.data.io import OutputExistsError, image_warnings, read_image

    bad_input: tuple = (InputError, OutputExistsError)  # exit 2; anything else is a bug (exit 1)
    case_index = 0
    try:
        from lightunetr_core.inference.options import InferenceOptions

        options = InferenceOptions.from_cli_args(args)  # checks the values (an InputError names the option)
        card, cases, outputs = _preflight(args)

        from lightunetr_core.inference import Segmenter, select_device

        if args.threads:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
        try:
            device = select_device(args.device)
        except ValueError as exc:
            raise _InputProblem(str(exc)) from None
        events.started(total=len(cases), config=config)
        segmenter = Segmenter(load_bundle(args.model, device=device), options.replace(device=str(device)),
                              log=lambda message: events.log(
                                  message, level="info" if message.startswith("exporting the network") else "warning"))
        events.stage("load", f"loaded model {card.name} on {device} ({segmenter.runtime.backend})")

        for case_index, (channel_paths, out) in enumerate(zip(cases, outputs)):
            cancel.raise_if_cancelled()
            events.stage("read", f"case {case_index + 1}/{len(cases)}: reading {channel_paths[0].name}",
                         case=case_index, input=[str(p) for p in channel_paths])
            images = [read_image(p) for p in channel_paths]
            for image, path in zip(images, channel_paths):
                for warning in image_warnings(image, str(path)):
                    events.log(warning, level="warning")
            events.stage("inference", f"case {case_index + 1}/{len(cases)}: segmenting", case=case_index)
            tick = {"last": 0.0, "start": time.perf_counter()}

            def progress(done: int, total: int, _case=case_index) -> None:
                now = time.perf_counter()
                if done == total or now - tick["last"] > 0.2 or done == 1:
                    tick["last"] = now
                    elapsed = now - tick["start"]
                    events.progress(done, total, rate=done / elapsed if elapsed > 0 else None, case=_case,
                                    cases=len(cases), unit="window")

            result = segmenter.segment(images, progress=progress, cancel=cancel)
            cancel.raise_if_cancelled()
            events.stage("write", f"case {case_index + 1}/{len(cases)}: writing", case=case_index)
            case_written, kind, stats = _write_case(result, out, card, channel_paths[0], args.overwrite)
            _report_case(events, case_index, out, kind, card, result, stats)
            written.extend(str(p) for p in case_written)
            events.progress(case_index + 1, len(cases), unit="case", device=result.device, backend=result.backend,
                            timings={k: round(v, 3) for k, v in result.timings.items()})
        events.emit("finished", elapsed_s=round(time.perf_counter() - start, 3), cases=len(cases), outputs=written)
        return EXIT_OK
    except JobCancelled as exc:
        events.emit("cancelled", message=f"segmentation cancelled ({exc}); {len(written)} file(s) of finished "
                    "cases were kept", checkpoint=None, outputs=written)
        return EXIT_CANCELLED
    except bad_input as exc:
        events.error(str(exc), kind="bad_input", case=case_index, outputs=written)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - report, don't crash with a traceback in JSON mode
        import traceback

        events.error(f"internal error: {type(exc).__name__}: {exc}", kind="internal", case=case_index,
                     traceback=traceback.format_exc(limit=8), outputs=written)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    from lightunetr_core.cli import main

    sys.exit(main(["segment", *sys.argv[1:]]))
