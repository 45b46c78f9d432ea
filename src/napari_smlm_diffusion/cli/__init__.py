"""The ``smlm-diffusion`` command: simulate, evaluate, train and run the models without a GUI.

One module per command group (:mod:`.simulation`, :mod:`.evaluation`, :mod:`.kde`,
:mod:`.posterior`, :mod:`.training`), each with a ``register(subparsers)`` function; shared
option helpers in :mod:`.options`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import one_line
from . import evaluation, kde, posterior, simulation, training
from .options import CliError, Parser

COMMAND_GROUPS = (simulation, evaluation, kde, posterior, training)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``smlm-diffusion`` (all options documented with units)."""
    parser = Parser(
        prog="smlm-diffusion",
        description="Single-molecule localization microscopy with a KDE CNN and a conditional "
        "diffusion posterior. Coordinates are in nm from the top-left corner of the top-left "
        "pixel; frames are counted from 1 in CSV tables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (for bug reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 internal error, 2 user error or a problem
    with the input, the output or the machine, 130 interrupted).

    Every error is one line on stderr; ``--debug`` adds the traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"smlm-diffusion {args.command}: error:"
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("smlm-diffusion: interrupted; no output was written", file=sys.stderr)
        return 130
    except MemoryError:
        _debug(args)
        print(f"{prefix} out of memory; use a smaller --batch-size or --frames range",
              file=sys.stderr)
        return 2
    except (CliError, ValueError, OSError, RuntimeError) as error:
        _debug(args)
        text = one_line(error)
        if type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in text:
            text = f"out of memory ({text}); use a smaller --batch-size or --frames range"
        print(f"{prefix} {text}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: one line, the traceback only on request
        _debug(args)
        print(f"{prefix} internal error {type(error).__name__}: {one_line(error)} (please "
              "report it; rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


def _debug(args: argparse.Namespace) -> None:
    if getattr(args, "debug", False):
        traceback.print_exc()
