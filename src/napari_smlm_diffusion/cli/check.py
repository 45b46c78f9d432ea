"""``smlm-diffusion check-uncertainty``: the label-free check of reported uncertainties."""

from __future__ import annotations

import argparse
import json

from ..uncertainty_check import DEFAULT_RADIUS_NM, MIN_PAIRS, check_uncertainty, describe


def _positive_nm(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of nm, got {text!r}")
    return value


def cmd_check_uncertainty(args: argparse.Namespace) -> None:
    """Read the table, run the check, print one line (or JSON with ``--json``)."""
    from ..io import read_localizations

    result = check_uncertainty(read_localizations(args.locs), args.radius, args.min_pairs)
    if args.json:
        print(json.dumps(result.to_dict() | {"reading": describe(result)}, indent=2))
    else:
        print(describe(result))


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``check-uncertainty`` command to a ``smlm-diffusion`` sub-parser set."""
    parser = subparsers.add_parser(
        "check-uncertainty", help="check reported uncertainties without ground truth",
        description="Match molecules localized again in the next frame (mutual nearest "
        "neighbours within --radius) and compare their displacement with the reported "
        "uncertainties: robust spread of displacement / predicted (ideal 1; above 1: "
        "uncertainties too small) and Spearman correlation of predicted vs observed "
        "displacement (positive: they rank molecules by their real error).")
    parser.add_argument("locs", metavar="LOCS.csv", help="localization table (ThunderSTORM CSV "
                        "with \"uncertainty [nm]\" or per-axis uncertainty columns)")
    parser.add_argument("--radius", type=_positive_nm, default=DEFAULT_RADIUS_NM, metavar="NM",
                        help=f"matching radius in nm (default {DEFAULT_RADIUS_NM:g}); too small "
                        "a radius cuts large displacements and makes the spread look better")
    parser.add_argument("--min-pairs", type=int, default=MIN_PAIRS, metavar="N",
                        help=f"fewest matched pairs for a result (default {MIN_PAIRS})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of one line")
    parser.set_defaults(func=cmd_check_uncertainty)
    return parser
