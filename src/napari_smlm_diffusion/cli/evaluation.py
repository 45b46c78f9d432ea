"""The ``evaluate`` command: localizations scored against the ground truth."""

from __future__ import annotations

import argparse
import json

from .options import (
    positive_float,
)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ..io import read_localizations
    from ..metrics import evaluate, format_table

    truth = read_localizations(args.truth)
    locs = read_localizations(args.locs)
    result = evaluate(truth, locs, args.tolerance)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    ev = subparsers.add_parser(
        "evaluate", help="score localizations against ground truth",
        description="Match localizations to the truth per frame (Hungarian method) and print "
                    "Jaccard, RMSE, efficiency, precision, recall.")
    ev.add_argument("truth", metavar="TRUTH.csv", help="ground-truth table (ThunderSTORM CSV)")
    ev.add_argument("locs", metavar="LOCS.csv", help="localization table (ThunderSTORM CSV)")
    ev.add_argument("--tolerance", type=positive_float, default=250.0,
                    help="matching radius in nm (default 250)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.set_defaults(func=cmd_evaluate)
