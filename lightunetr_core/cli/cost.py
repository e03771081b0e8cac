"""``lightunetr cost``: parameters and MACs of a network configuration at a given input size."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cost",
        help="print parameters and MACs of a network for an input size",
        description="Parameters and multiply-accumulates (torch.utils.flop_counter; 1 MAC = 2 FLOPs) "
        "of one forward pass, per top-level module.",
    )
    parser.add_argument("--architecture", choices=["lightunetr", "lightunetr_large"], default="lightunetr")
    parser.add_argument("--patch-size", type=int, nargs=3, default=[112, 112, 80], metavar=("X", "Y", "Z"))
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightunetr_core.models import build_model
    from lightunetr_core.models.cost import measure_cost

    kwargs = {"in_channels": args.in_channels, "num_classes": args.num_classes}
    if args.architecture == "lightunetr":
        kwargs["patch_size"] = tuple(args.patch_size)
    try:
        model = build_model(args.architecture, **kwargs)
        cost = measure_cost(model, (args.batch, args.in_channels, *args.patch_size))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"architecture": args.architecture, **cost.to_dict()}, indent=2))
    else:
        print(f"{args.architecture}")
        print(cost.format())
    return 0
