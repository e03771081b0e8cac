"""``lightunetr download NAME``: get a model of the catalog (the authors' released checkpoints) as a bundle."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download a released model from the catalog into the model library",
        description="Download a model of the catalog (--list shows them, with the input each expects and its "
                    "measured run time), verify it (SHA-256 when published; it must load weights-only and strictly as "
                    "the released network), convert it into a bundle and put it in the models folder, where the Slicer "
                    "modules find it. A failed or interrupted download leaves nothing behind. Exit codes: 0 ok, 1 the "
                    "download or its verification failed, 2 bad input (unknown name), 3 cancelled.",
    )
    parser.add_argument("name", nargs="?", help="catalog name (e.g. la-8lab)")
    parser.add_argument("--list", action="store_true", help="describe the catalog's models and exit")
    parser.add_argument("--models-dir", default=None,
                        help="model library folder (default: $LIGHTUNETR_MODELS_DIR or ~/.lightunetr/models, as Slicer)")
    parser.add_argument("--base-url", default=None,
                        help="fetch the files from this folder URL instead (a mirror; also $LIGHTUNETR_CATALOG_BASE_URL)")
    parser.add_argument("--overwrite", action="store_true", help="replace a bundle of the same name")
    parser.add_argument("--json", action="store_true", help="with --list: the catalog as JSON")
    parser.add_argument("--events", choices=("human", "json"), default="human")
    parser.add_argument("--cancel-file", default=None, help="stop (nothing kept) when this file appears")
    parser.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import asdict

    from lightunetr_core.bundle import default_models_folder
    from lightunetr_core.catalog.catalog import CatalogError, load_catalog
    from lightunetr_core.jobs import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, CancelToken, EventWriter, JobCancelled

    try:
        catalog = load_catalog()
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.list:
        if args.json:
            print(json.dumps({name: asdict(e) for name, e in catalog.items()}, indent=2))
        else:
            print("\n\n".join(e.describe() for e in catalog.values()))
        return EXIT_OK
    events = EventWriter.for_cli("download", args.events)
    if not args.name:
        events.error("give a catalog name (lightunetr download --list shows them)", kind="bad_input")
        return EXIT_BAD_INPUT
    if args.name not in catalog:
        events.error(f"no model {args.name!r} in the catalog; available: {', '.join(catalog)}", kind="bad_input")
        return EXIT_BAD_INPUT
    from lightunetr_core.catalog.download import DownloadError, download_model

    entry = catalog[args.name]
    cancel = CancelToken(args.cancel_file)
    cancel.install_signal_handlers()
    events.started(total=None, config={"name": entry.name, "url": entry.download_url(args.base_url)})
    try:
        path = download_model(entry, args.models_dir or default_models_folder(), base_url=args.base_url, events=events,
                              cancel=cancel, overwrite=args.overwrite)
    except JobCancelled:
        events.emit("cancelled", message="download cancelled; nothing was kept", checkpoint=None)
        return EXIT_CANCELLED
    except DownloadError as exc:
        events.error(str(exc), kind="download")
        return EXIT_ERROR
    events.emit("output", path=str(path), kind="bundle", model=entry.name)
    events.emit("finished", bundle=str(path))
    return EXIT_OK
