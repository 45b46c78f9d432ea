"""The ``adapt`` command: models fine-tuned for the microscope that recorded a stack."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..adapt import DEFAULT_DENOISER_STEPS, DEFAULT_KDE_STEPS, DEFAULT_OBJECTIVE, OBJECTIVES
from .options import CliError, add_input_options, camera_from_args, positive_float, positive_int

log = logging.getLogger(__name__)


def setup_from_stack(args: argparse.Namespace):
    """The :class:`adapt.Setup` of the stack: camera and PSF from the options (or the file), the
    rest from the options or else measured (:func:`adapt.measure_setup`; the camera is taken as
    given when the file's metadata or the options give its values, and measured otherwise)."""
    from ..adapt import measure_setup
    from ..camera import camera_values_from_metadata
    from ..io import open_stack

    with open_stack(args.stack, channel=args.channel) as stack:
        camera, sigma_nm = camera_from_args(args, stack)
        sigma_known = args.psf_sigma is not None or stack.metadata.get("psf_sigma_nm")
        stored = camera_values_from_metadata(stack.metadata, on_ignored=lambda *_: None)
        known = any(key in stored for key in ("baseline", "sensitivity")) or any(
            getattr(args, key) is not None for key in ("baseline", "sensitivity"))
        return measure_setup(stack.data, camera, sigma_nm if sigma_known else None,
                             args.photons, args.background, args.density, camera_known=known)


def stack_excerpt(args: argparse.Namespace):
    """Consecutive frames from the middle of the stack, for the label-free check of the
    generic and the adapted models (:class:`adapt_stack_check.StackExcerpt`)."""
    from ..adapt_stack_check import StackExcerpt
    from ..io import open_stack

    with open_stack(args.stack, channel=args.channel) as stack:
        return StackExcerpt.middle(stack.data)


def cmd_adapt(args: argparse.Namespace) -> None:
    from ..adapt import STATE_FILE, adapt_models

    out = Path(args.out_dir)
    if (out / STATE_FILE).is_file() and not args.resume:
        raise CliError(f"{out} already holds an adaptation: add --resume to continue it, or "
                       "choose a new folder")
    setup = setup_from_stack(args)
    adapt_models(setup, out, kde_steps=args.kde_steps, denoiser_steps=args.denoiser_steps,
                 calibration_frames=args.calibration_frames, seed=args.seed,
                 objective=args.objective, report=log.info, own_frames=stack_excerpt(args))
    print(f"adapted models written to {out}: use --model {out} with localize, kde and posterior")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` command."""
    parser = subparsers.add_parser(
        "adapt", help="fine-tune both models for the microscope that recorded STACK",
        description="Fine-tune the KDE CNN, then the denoiser, on simulations of your microscope "
        "(its camera, pixel size, PSF, photons, background and density, measured on the stack "
        "where not given), recalibrate the uncertainties, and write kde_cnn.safetensors and "
        "denoiser.safetensors with their model cards into OUT_DIR. Interrupted? Run the same "
        "command with --resume.")
    add_input_options(parser)
    parser.add_argument("-o", "--output", dest="out_dir", required=True, metavar="MODEL_DIR",
                        help="folder for the adapted models")
    parser.add_argument("--photons", type=positive_float, metavar="N",
                        help="typical photons per molecule per frame (default: measured)")
    parser.add_argument("--background", type=positive_float, metavar="B",
                        help="typical background photons per pixel (default: measured)")
    parser.add_argument("--density", type=positive_float, metavar="D",
                        help="typical active molecules per um^2 (default: measured)")
    parser.add_argument("--kde-steps", type=positive_int, default=DEFAULT_KDE_STEPS,
                        help=f"fine-tuning steps of the KDE CNN (default {DEFAULT_KDE_STEPS})")
    parser.add_argument("--denoiser-steps", type=positive_int, default=DEFAULT_DENOISER_STEPS,
                        help="fine-tuning steps of the denoiser (default "
                        f"{DEFAULT_DENOISER_STEPS})")
    parser.add_argument("--objective", choices=OBJECTIVES, default=DEFAULT_OBJECTIVE,
                        help="what the fine-tuned KDE CNN must improve on the matched "
                        "validation sets to replace the generic one: jaccard (more molecules "
                        "found within 100 nm) or efficiency (molecules found and well placed: "
                        "the SMLM challenge's score, which also weighs the RMSE) (default "
                        f"{DEFAULT_OBJECTIVE})")
    parser.add_argument("--calibration-frames", type=positive_int, default=16,
                        help="simulated frames per density for the recalibration (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted adaptation in MODEL_DIR")
    parser.set_defaults(func=cmd_adapt)
