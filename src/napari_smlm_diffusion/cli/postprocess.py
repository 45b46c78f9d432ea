"""``smlm-diffusion`` post-processing commands: drift, merge, render, frc, convert.

:func:`register` adds them to the sub-parsers of the main command. Localization files are
ThunderSTORM CSV (``.csv``) or Picasso HDF5 (``.hdf5``/``.h5``), chosen by extension. Every
output is written atomically; problems are raised as one-line ``ValueError``/``OSError``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..io import atomic_group, check_output_file, write_tiff
from ..postprocess.common import PostprocessError
from ..postprocess.formats import (
    CSV_SUFFIXES,
    HDF5_SUFFIXES,
    LocalizationFile,
    check_extension,
    read_table,
    write_table,
)
from .options import positive_float


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value
    return parse


def _blur(text: str) -> str | float:
    if text == "uncertainty":
        return text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'uncertainty' or a blur sigma in nm > 0, got {text!r}") from None


def _check_outputs(table_out: str | None, plot: str | None = None) -> None:
    """Fail before any work if an output has the wrong extension or cannot be written."""
    if table_out is not None:
        check_extension(table_out)
        check_output_file(table_out)
    if plot is not None:
        if Path(plot).suffix.lower() != ".png":
            raise PostprocessError(f"{plot}: plots are written as PNG; use a .png file name")
        check_output_file(plot)


def _check_pixel_size(args: argparse.Namespace) -> None:
    """Fail before any work if Picasso HDF5 is to be written from a CSV without a pixel size."""
    to_hdf5 = Path(args.output).suffix.lower() in HDF5_SUFFIXES
    if to_hdf5 and Path(args.locs).suffix.lower() in CSV_SUFFIXES and not args.camera_pixel_size:
        raise PostprocessError(f"{args.output}: writing Picasso HDF5 from a CSV needs the camera "
                               "pixel size: give --camera-pixel-size NM")


def _load(path: str) -> LocalizationFile:
    check_extension(path)
    return read_table(path)


def cmd_drift(args: argparse.Namespace) -> int:
    from ..postprocess.drift import apply_drift, estimate_drift

    _check_outputs(args.output, args.plot)
    if args.curve:
        check_output_file(args.curve)
    _check_pixel_size(args)
    source = _load(args.locs)
    result = estimate_drift(source.table, window=args.window, bin_nm=args.bin,
                            max_drift_nm=args.max_drift, refine=not args.no_refine)
    corrected = apply_drift(source.table, result.drift_nm)
    with atomic_group():
        write_table(args.output, corrected, source, args.camera_pixel_size)
        if args.curve:
            from ..postprocess.drift_curve import write_drift_curve

            write_drift_curve(args.curve, result.drift_nm)
        if args.plot:
            from matplotlib.figure import Figure

            from ..postprocess.plots import draw_drift, save_png

            save_png(draw_drift(Figure(figsize=(7, 4)), result), args.plot)
    span = result.drift_nm.max(axis=0) - result.drift_nm.min(axis=0)
    print(f"drift over {len(result.drift_nm)} frames: range x {span[0]:.1f} nm, y {span[1]:.1f} "
          f"nm ({len(result.window_frames)} windows, {result.pairs_rejected} of "
          f"{result.pairs_used + result.pairs_rejected} pairs rejected); wrote {args.output}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..postprocess.merge import merge_blinks

    _check_outputs(args.output)
    _check_pixel_size(args)
    source = _load(args.locs)
    merged = merge_blinks(source.table, radius_nm=args.radius, gap=args.gap)
    write_table(args.output, merged, source, args.camera_pixel_size)
    print(f"merged {len(source.table)} localizations into {len(merged)} molecules; "
          f"wrote {args.output}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from ..postprocess.render import render

    if Path(args.output).suffix.lower() not in (".tif", ".tiff"):
        raise PostprocessError(f"{args.output}: images are written as TIFF; use .tif")
    check_output_file(args.output)
    source = _load(args.locs)
    shape = None
    if args.field is not None:
        width_nm, height_nm = args.field
    elif source.width and source.height and source.pixel_size_nm:
        width_nm = source.width * source.pixel_size_nm
        height_nm = source.height * source.pixel_size_nm
    else:
        width_nm = height_nm = None
    if width_nm is not None:
        shape = (math.ceil(height_nm / args.pixel_size), math.ceil(width_nm / args.pixel_size))
    image = render(source.table, args.pixel_size, blur=args.blur, shape=shape)
    write_tiff(args.output, image, pixel_size_nm=args.pixel_size,
               metadata={"rendering": "histogram" if args.blur is None else "gaussian",
                         "blur": args.blur, "localizations": len(source.table)})
    print(f"rendered {len(source.table)} localizations as a {image.shape[1]} x "
          f"{image.shape[0]} image of {args.pixel_size:g} nm pixels; wrote {args.output}")
    return 0


def cmd_frc(args: argparse.Namespace) -> int:
    from ..postprocess.frc import frc_localizations

    _check_outputs(None, args.plot)
    source = _load(args.locs)
    result = frc_localizations(source.table, pixel_size_nm=args.pixel_size,
                               block_size=args.block)
    if args.plot:
        from matplotlib.figure import Figure

        from ..postprocess.plots import draw_frc, save_png

        save_png(draw_frc(Figure(figsize=(6, 4)), result), args.plot)
    if args.json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    elif math.isnan(result.resolution_nm):
        print("FRC resolution: undefined (the FRC never drops below 1/7)")
    else:
        print(f"FRC resolution: {result.resolution_nm:.1f} nm")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    _check_outputs(args.output)
    _check_pixel_size(args)
    source = _load(args.locs)
    if args.width is not None:
        source.width = args.width
    if args.height is not None:
        source.height = args.height
    write_table(args.output, source.table, source, args.camera_pixel_size)
    print(f"converted {len(source.table)} localizations; wrote {args.output}")
    return 0


def _camera_pixel_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--camera-pixel-size", type=positive_float, metavar="NM",
                        help="camera pixel size in nm, needed to write Picasso HDF5 (which "
                             "stores pixels) from a ThunderSTORM CSV")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the commands drift, merge, render, frc and convert to ``subparsers``."""
    dr = subparsers.add_parser(
        "drift", help="correct stage drift by redundant cross-correlation (RCC)",
        description="Estimate the drift of the localizations by redundant cross-correlation "
                    "of time windows, refined by re-found molecules, and subtract it.")
    dr.add_argument("locs", help="localizations (.csv ThunderSTORM or .hdf5 Picasso)")
    dr.add_argument("-o", "--output", required=True, help="corrected localizations (.csv/.hdf5)")
    dr.add_argument("--window", type=_count(1), metavar="FRAMES",
                    help="frames per time window (default: about 20 windows)")
    dr.add_argument("--bin", type=positive_float, default=20.0, metavar="NM",
                    help="histogram pixel of the cross-correlations (default 20 nm)")
    dr.add_argument("--max-drift", type=positive_float, default=1000.0, metavar="NM",
                    help="largest drift between two windows (default 1000 nm)")
    dr.add_argument("--no-refine", action="store_true",
                    help="skip the refinement by re-found molecules")
    dr.add_argument("--plot", metavar="PNG", help="write the drift curve as PNG")
    dr.add_argument("--curve", metavar="CSV", help="write the per-frame drift curve as CSV "
                    "(for smlm-diffusion kde --sum --drift)")
    _camera_pixel_size(dr)
    dr.set_defaults(func=cmd_drift)

    me = subparsers.add_parser(
        "merge", help="merge blinks of one molecule over consecutive frames",
        description="Link detections within RADIUS over consecutive frames (GAP missing frames "
                    "allowed) and merge them: position weighted by 1/sigma^2, combined "
                    "uncertainty, summed photons, frames on.")
    me.add_argument("locs", help="localizations (.csv or .hdf5)")
    me.add_argument("-o", "--output", required=True, help="merged localizations (.csv/.hdf5)")
    me.add_argument("--radius", type=positive_float, default=50.0, metavar="NM",
                    help="largest distance between linked detections (default 50 nm)")
    me.add_argument("--gap", type=_count(0), default=1, metavar="FRAMES",
                    help="missing frames allowed within a molecule (default 1)")
    _camera_pixel_size(me)
    me.set_defaults(func=cmd_merge)

    re = subparsers.add_parser(
        "render", help="render localizations as a super-resolution TIFF",
        description="Render a histogram, or each localization as a Gaussian of its own "
                    "uncertainty or of a fixed sigma, on a grid whose origin is the top-left "
                    "corner of the camera's top-left pixel.")
    re.add_argument("locs", help="localizations (.csv or .hdf5)")
    re.add_argument("-o", "--output", required=True, help="image (.tif)")
    re.add_argument("--pixel-size", type=positive_float, required=True, metavar="NM",
                    help="output pixel size in nm")
    re.add_argument("--blur", type=_blur, metavar="uncertainty|NM",
                    help="'uncertainty' or a fixed sigma in nm (default: histogram)")
    re.add_argument("--field", type=positive_float, nargs=2, metavar=("WIDTH_NM", "HEIGHT_NM"),
                    help="field of view from the origin (default: the camera size of a "
                         "Picasso file, else up to the largest coordinate)")
    re.set_defaults(func=cmd_render)

    fr = subparsers.add_parser(
        "frc", help="FRC resolution of the localizations (frame blocks split in halves)",
        description="Fourier ring correlation of two halves (even/odd blocks of frames); the "
                    "resolution is where the smoothed curve drops below 1/7.")
    fr.add_argument("locs", help="localizations (.csv or .hdf5)")
    fr.add_argument("--pixel-size", type=positive_float, default=5.0, metavar="NM",
                    help="pixel size of the rendered halves (default 5 nm)")
    fr.add_argument("--block", type=_count(1), default=50, metavar="FRAMES",
                    help="frames per block of the split (default 50)")
    fr.add_argument("--json", action="store_true",
                    help="print JSON (resolution_nm, the curve) instead of text")
    fr.add_argument("--plot", metavar="PNG", help="write the FRC curve as PNG")
    fr.set_defaults(func=cmd_frc)

    co = subparsers.add_parser(
        "convert", help="convert between ThunderSTORM CSV and Picasso HDF5 (by extension)",
        description="Convert localizations between ThunderSTORM CSV (nm) and Picasso HDF5 "
                    "(camera pixels, pixel-centre origin, .yaml metadata).")
    co.add_argument("locs", help="input (.csv or .hdf5)")
    co.add_argument("-o", "--output", required=True, help="output (.csv or .hdf5)")
    _camera_pixel_size(co)
    co.add_argument("--width", type=_count(1), metavar="PX",
                    help="camera width in pixels for Picasso metadata (default: from the data)")
    co.add_argument("--height", type=_count(1), metavar="PX",
                    help="camera height in pixels for Picasso metadata (default: from the data)")
    co.set_defaults(func=cmd_convert)
