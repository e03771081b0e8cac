"""The ``lightunetr`` command line.

Each sub-command lives in its own module of this package with two functions:
``register(subparsers)`` adds its parser (cheap: no torch import) and sets ``func`` to a
``run(args) -> int`` that does the work and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names (inside lightunetr_core.cli) in the order they appear in ``lightunetr --help``.
COMMAND_MODULES = [
    "info",
    "cost",
    "train",
    "evaluate",
    "plot",
    "export_onnx",
    "demo",
    "segment",
    "import_reference",
    "download",
    "export_bundle",
]


def build_parser() -> argparse.ArgumentParser:
    from lightunetr_core import __version__

    parser = argparse.ArgumentParser(
        prog="lightunetr",
        description="Light-UNETR segmentation: networks, CSE semi-supervised training, inference, bundles.",
    )
    parser.add_argument("--version", action="version", version=f"lightunetr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"lightunetr_core.cli.{name}").register(subparsers)
    return parser


def exit_process(code: int) -> None:
    """End the ``lightunetr`` process with ``code``. After a cancel everything is on disk and the events are
    flushed, so the interpreter's module teardown (seconds with torch and MONAI loaded on a busy machine) is
    skipped and the caller that asked to cancel sees the exit code at once."""
    import os

    from lightunetr_core.jobs import EXIT_CANCELLED

    if code == EXIT_CANCELLED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


def console_main() -> None:
    """The ``lightunetr`` console script and ``python -m lightunetr_core`` (a process of its own)."""
    exit_process(main())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    console_main()
