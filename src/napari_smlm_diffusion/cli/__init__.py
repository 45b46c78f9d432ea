"""The ``smlm-diffusion`` command: simulate, evaluate, train and run the models without a GUI.

One module per command group (simulation, inspect, evaluation, kde, posterior, check,
postprocess, adapt, calibrate, training), each with a ``register(subparsers)`` function; shared
option helpers in :mod:`.options`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import InputError, OutputError, one_line
from . import (
    adapt,
    calibrate,
    check,
    evaluation,
    inspect,
    kde,
    posterior,
    postprocess,
    simulation,
    training,
)
from .options import Parser, log_to_stderr

COMMAND_GROUPS = (simulation, inspect, evaluation, kde, posterior, check, postprocess, adapt,
                  calibrate, training)


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


#: Bad-input errors of modules that import torch: (module, class). A module that is not loaded
#: cannot have raised its error, so they are looked up only when present (help stays fast).
TORCH_SIDE_INPUT_ERRORS = (("napari_smlm_diffusion.devices", "DeviceError"),
                           ("napari_smlm_diffusion.pretrained", "WeightsError"))


def is_bad_input(error: BaseException) -> bool:
    """Whether ``error`` is a problem with the user's input, the output or the machine (our
    error classes, files and folders), as opposed to a bug."""
    if isinstance(error, (InputError, OutputError, OSError)):
        return True
    return any(isinstance(error, getattr(sys.modules[module], name))
               for module, name in TORCH_SIDE_INPUT_ERRORS if module in sys.modules)


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    devices = sys.modules.get("napari_smlm_diffusion.devices")
    return devices is not None and devices.is_out_of_memory(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code: 0 ok, 1 a bug (internal error), 2 bad input or a
    problem with the output or the machine (:func:`is_bad_input`, out of memory; also argparse
    errors), 130 interrupted.

    Every error is one line on stderr; ``--debug`` adds the traceback. Messages of the library
    (warnings, the out-of-memory ladder) are logged to stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"smlm-diffusion {args.command}: error:"
    with log_to_stderr(debug=args.debug):
        try:
            args.func(args)
        except KeyboardInterrupt:
            print("smlm-diffusion: interrupted; no output was written", file=sys.stderr)
            return 130
        except Exception as error:
            _debug(args)
            text = one_line(error)
            if _is_out_of_memory(error):
                text = (f"out of memory ({text}); " if str(error) else "out of memory; ") + \
                    "use a smaller --batch-size or --frames range"
            elif not is_bad_input(error):  # a bug: one line, the traceback only on request
                print(f"{prefix} internal error {type(error).__name__}: {text} (please report "
                      "it; rerun with --debug for the traceback)", file=sys.stderr)
                return 1
            print(f"{prefix} {text}", file=sys.stderr)
            return 2
    return 0


def _debug(args: argparse.Namespace) -> None:
    if getattr(args, "debug", False):
        traceback.print_exc()
