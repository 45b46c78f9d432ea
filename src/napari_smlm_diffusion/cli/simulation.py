"""The ``simulate`` command: a simulated stack with its ground truth."""

from __future__ import annotations

import argparse

from ..simulate import LAYOUTS
from .options import (
    CliError,
    number_or_range,
    output_dir,
    positive_float,
    positive_int,
)


def cmd_simulate(args: argparse.Namespace) -> None:
    from ..blinking import Blinking
    from ..camera import preset
    from ..io import check_output_dir, write_tiff, write_truth
    from ..simulate import SimulationConfig, simulate_stack

    camera = preset(args.camera)
    if args.pixel_size:
        camera = camera.with_values(pixel_size=args.pixel_size)
    try:  # the configuration checks the option values
        blinking = None if args.on_time is None else Blinking(
            on_time=args.on_time, off_time=args.off_time, bleach_cycles=args.bleach_cycles,
            photon_spread=args.photon_spread)
        config = SimulationConfig(size=(args.size, args.size), density=args.density,
                                  photons=args.photons, background=args.background,
                                  psf_sigma_px=args.psf_sigma / camera.pixel_size,
                                  camera=camera, layout=args.layout, blinking=blinking,
                                  offset_spread_adu=args.offset_spread,
                                  read_noise_spread=args.read_noise_spread,
                                  drift_nm=args.drift)
    except ValueError as error:
        raise CliError(str(error)) from error
    check_output_dir(args.out_dir)
    stack = simulate_stack(args.frames, config, seed=args.seed)
    metadata = {"camera": camera.to_dict(), "psf_sigma_nm": args.psf_sigma, "seed": args.seed,
                "layout": args.layout, "density_per_um2": args.density, "simulated": True,
                "blinking": None if blinking is None else vars(blinking),
                "offset_spread_adu": args.offset_spread,
                "read_noise_spread": args.read_noise_spread, "drift_nm": args.drift}
    with output_dir(args.out_dir) as out:
        out.mkdir(parents=True, exist_ok=True)
        write_tiff(out / "stack.tif", stack.frames, pixel_size_nm=camera.pixel_size,
                   metadata=metadata)
        write_truth(out / "truth.csv", stack.truth)
    print(f"wrote {out / 'stack.tif'} ({args.frames} frames of {args.size}x{args.size} px, "
          f"{camera.pixel_size:g} nm pixels) and {out / 'truth.csv'} ({len(stack.truth)} emitters)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` command."""
    sim = subparsers.add_parser(
        "simulate", help="simulate a blinking SMLM stack with ground truth",
        description="Write OUT_DIR/stack.tif (uint16 ADU, pixel size in the metadata) and "
                    "OUT_DIR/truth.csv (ThunderSTORM columns, frames from 1).")
    sim.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created if missing)")
    sim.add_argument("--frames", type=positive_int, default=100, help="number of frames "
                     "(default 100)")
    sim.add_argument("--size", type=positive_int, default=64,
                     help="frame width and height in camera pixels (default 64)")
    sim.add_argument("--density", type=number_or_range, default=1.0,
                     help="active emitters per um^2 per frame, a number or a range LOW-HIGH "
                     "(default 1)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--camera", choices=["sCMOS", "EMCCD"], default="sCMOS",
                     help="camera preset: sCMOS (100 nm pixels, 0.46 e-/ADU, 1.6 e- read noise) "
                     "or EMCCD (160 nm pixels, EM gain 100, 4.5 e-/ADU) (default sCMOS)")
    sim.add_argument("--pixel-size", type=positive_float, default=None,
                     help="camera pixel size in nm (default: the preset's)")
    sim.add_argument("--layout", choices=LAYOUTS, default="filaments",
                     help="where emitters sit (default filaments)")
    sim.add_argument("--photons", type=number_or_range, default=(1000.0, 5000.0),
                     help="photons per emitter per frame, a number or a range LOW-HIGH drawn "
                     "log-uniformly (default 1000-5000)")
    sim.add_argument("--background", type=number_or_range, default=50.0,
                     help="background photons per pixel, a number or a range (default 50)")
    sim.add_argument("--psf-sigma", type=positive_float, default=120.0,
                     help="PSF standard deviation in nm (default 120)")
    kinetics = sim.add_argument_group(
        "blinking", "realistic photoswitching (default: every frame draws its emitters afresh)")
    kinetics.add_argument("--on-time", type=positive_float, default=None, metavar="FRAMES",
                          help="mean on-time of a fluorophore in frames (turns blinking on; "
                          "--density is then the mean density of fluorophores on)")
    kinetics.add_argument("--off-time", type=positive_float, default=300.0, metavar="FRAMES",
                          help="mean time between on-events in frames (default 300)")
    kinetics.add_argument("--bleach-cycles", type=positive_float, default=float("inf"),
                          metavar="N", help="mean number of on-events before bleaching "
                          "(default: never bleaches)")
    kinetics.add_argument("--photon-spread", type=float, default=0.2, metavar="S",
                          help="log-normal frame-to-frame spread of a fluorophore's brightness "
                          "(default 0.2)")
    camera = sim.add_argument_group("camera and stage")
    camera.add_argument("--offset-spread", type=float, default=0.0, metavar="ADU",
                        help="std of the per-pixel offset around the baseline (sCMOS; default 0)")
    camera.add_argument("--read-noise-spread", type=float, default=0.0, metavar="S",
                        help="log-normal spread of the per-pixel read noise (sCMOS; default 0)")
    camera.add_argument("--drift", type=float, default=0.0, metavar="NM",
                        help="largest excursion of a smooth random stage drift over the stack "
                        "(default 0); truth.csv then gives drifted positions")
    sim.set_defaults(func=cmd_simulate)
