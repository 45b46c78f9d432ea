"""The ``kde`` and ``localize`` commands: the KDE CNN over a stack."""

from __future__ import annotations

import argparse

from ..inspection import job_sample
from .options import (
    CliError,
    add_input_options,
    add_run_options,
    add_threshold_option,
    check_output,
    kde_session,
    warn_after_job,
)


def cmd_kde(args: argparse.Namespace) -> None:
    from ..geometry import fine_pixel_nm, fine_shape, frame_metadata
    from ..io import write_tiff, write_tiff_frames
    from ..pipeline import iter_kde, run_kde

    check_output(args)
    drift = None
    if args.drift:
        from ..postprocess.drift import sum_shifted_frames
        from ..postprocess.drift_curve import check_curve_covers, read_drift_curve

        if not args.sum:
            raise CliError("--drift corrects the summed image: add --sum")
        drift = read_drift_curve(args.drift)
    with kde_session(args, "KDE") as (stack, camera, sigma, frames, engine, progress):
        if drift is not None:
            check_curve_covers(drift, frames, stack.data.shape[0], args.drift)
        u = engine.upsampling
        fine = fine_pixel_nm(camera.pixel_size, u)
        metadata = {"camera": camera.to_dict(), **frame_metadata(frames),
                    "model": engine.card.name, "model_sha256": engine.card.sha256}

        def kde_frames():
            done = 0
            for batch in iter_kde(stack.data, camera, engine, frames, args.batch_size,
                                  sigma, localize=False):
                yield from batch.kdes
                done += len(batch.frames)
                progress(done, len(frames))

        if drift is not None:
            total = sum_shifted_frames(kde_frames(), drift, fine, first_frame=frames.start)
            write_tiff(args.output, total.astype("float32"), pixel_size_nm=fine,
                       metadata={**metadata, "drift_corrected_with": str(args.drift)})
        elif args.sum:
            result = run_kde(stack.data, camera, engine, frames, args.batch_size, sigma,
                             progress=progress, localize=False)
            write_tiff(args.output, result.sum_image, pixel_size_nm=fine, metadata=metadata)
        else:
            rows, cols = stack.data.shape[-2:]
            write_tiff_frames(args.output, kde_frames(), fine_shape((len(frames), rows, cols), u),
                              pixel_size_nm=fine, metadata=metadata)
    what = ("summed KDE (super-resolution image)" if args.sum
            else f"{len(frames)} KDE frame{'' if len(frames) == 1 else 's'}")
    print(f"wrote {args.output}: {what} on a {fine:g} nm grid")


def cmd_localize(args: argparse.Namespace) -> None:
    from ..io import write_localizations
    from ..pipeline import run_kde

    check_output(args)
    with kde_session(args, "localize") as (stack, camera, sigma, frames, engine, progress):
        result = run_kde(stack.data, camera, engine, frames, args.batch_size, sigma,
                         progress=progress, refine=args.fit)
        warn_after_job(job_sample(stack.data, frames), len(result.localizations))
    write_localizations(args.output, result.localizations)
    print(f"wrote {args.output}: {len(result.localizations)} localizations from "
          f"{len(frames)} frames")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``kde`` and ``localize`` commands."""
    kd = subparsers.add_parser(
        "kde", help="run the KDE CNN: per-frame KDEs or their sum",
        description="Run the pretrained KDE CNN on a raw stack and write the per-frame KDEs (4x "
                    "grid, pixel size in the metadata) or, with --sum, the summed super-resolution "
                    "image.")
    kd.add_argument("-o", "--output", required=True, metavar="OUT.tif", help="output TIFF")
    kd.add_argument("--sum", action="store_true", help="write only the sum over frames")
    kd.add_argument("--drift", metavar="CURVE.csv",
                    help="with --sum: shift every frame back by this drift curve before summing "
                    "(written by smlm-diffusion drift --curve)")
    add_input_options(kd)
    add_run_options(kd)
    kd.set_defaults(func=cmd_kde)

    lo = subparsers.add_parser(
        "localize", help="localize molecules with the KDE CNN",
        description="Detect molecules on the CNN's KDEs, refine them to sub-pixel positions, "
                    "measure photons and background on the raw frame, and write a "
                    "ThunderSTORM-compatible CSV (nm, frames from 1; uncertainty [nm] is the "
                    "per-axis precision (CRLB) of all molecules of the frame fitted together, "
                    "overlaps included).")
    lo.add_argument("-o", "--output", required=True, metavar="LOCS.csv", help="output CSV")
    lo.add_argument("--fit", action="store_true",
                    help="fit positions and photons of all molecules of a frame jointly on the raw "
                    "data instead of keeping the KDE peak positions (slower; measured no more "
                    "precise on the benchmark)")
    add_input_options(lo)
    add_run_options(lo)
    add_threshold_option(lo)
    lo.set_defaults(func=cmd_localize)
