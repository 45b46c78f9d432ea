"""The ``kde`` and ``localize`` commands: the KDE CNN over one or several stacks."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..inspection import job_sample
from .cluster import add_cluster_options, cluster_client, worker_threads
from .options import (
    CliError,
    add_input_options,
    add_run_options,
    add_threshold_option,
    kde_session,
    load_kde_engine,
    stack_outputs,
    warn_after_job,
)

SEVERAL = "OUT_DIR/<file name>{suffix} (-o is then a folder)"


def cmd_kde(args: argparse.Namespace) -> None:
    drift = None
    if args.drift:
        from ..postprocess.drift_curve import read_drift_curve

        if not args.sum:
            raise CliError("--drift corrects the summed image: add --sum")
        if len(args.stacks) > 1:
            raise CliError("--drift is the drift curve of one acquisition: give one stack")
        drift = read_drift_curve(args.drift)
    outputs = stack_outputs(args, ".tif")
    engine = load_kde_engine(args)
    for path, output in outputs:
        kde_of_stack(args, path, output, engine, drift)


def kde_of_stack(args: argparse.Namespace, path: str, output: Path, engine, drift) -> None:
    """The per-frame KDEs of one stack, or their (drift-corrected) sum, into ``output``."""
    from ..geometry import fine_pixel_nm, fine_shape, frame_metadata
    from ..io import write_tiff, write_tiff_frames
    from ..pipeline import iter_kde, run_kde

    with kde_session(args, path, engine, "KDE") as (stack, camera, sigma, frames, progress):
        if drift is not None:
            from ..postprocess.drift_curve import check_curve_covers

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
            from ..postprocess.drift import sum_shifted_frames

            total = sum_shifted_frames(kde_frames(), drift, fine, first_frame=frames.start)
            write_tiff(output, total.astype("float32"), pixel_size_nm=fine,
                       metadata={**metadata, "drift_corrected_with": str(args.drift)})
        elif args.sum:
            result = run_kde(stack.data, camera, engine, frames, args.batch_size, sigma,
                             progress=progress, localize=False)
            write_tiff(output, result.sum_image, pixel_size_nm=fine, metadata=metadata)
        else:
            rows, cols = stack.data.shape[-2:]
            write_tiff_frames(output, kde_frames(), fine_shape((len(frames), rows, cols), u),
                              pixel_size_nm=fine, metadata=metadata)
    what = ("summed KDE (super-resolution image)" if args.sum
            else f"{len(frames)} KDE frame{'' if len(frames) == 1 else 's'}")
    print(f"wrote {output}: {what} on a {fine:g} nm grid")


def cmd_localize(args: argparse.Namespace) -> None:
    outputs = stack_outputs(args, ".csv")
    engine = load_kde_engine(args)
    with cluster_client(args) as client:
        for path, output in outputs:
            localize_stack(args, path, output, engine, client)


def localize_stack(args: argparse.Namespace, path: str, output: Path, engine,
                   client=None) -> None:
    """The localizations of one stack into ``output`` (on the workers of ``client``, a dask
    client, when given)."""
    from ..io import write_localizations
    from ..pipeline import run_kde

    with kde_session(args, path, engine, "localize") as (stack, camera, sigma, frames,
                                                        progress):
        source = None
        if client is not None:
            from ..dask_cluster import worker_path
            from ..kde_distributed import KdeSpec, distributed_kde_source

            spec = KdeSpec(worker_path(args.weights), args.device, worker_threads(args),
                           engine.threshold)
            source = distributed_kde_source(client, spec, stack.data, camera, sigma,
                                            refine=args.fit, notify=engine.notify)
        result = run_kde(stack.data, camera, engine, frames, args.batch_size, sigma,
                         progress=progress, refine=args.fit, source=source)
        warn_after_job(job_sample(stack.data, frames), len(result.localizations))
    write_localizations(output, result.localizations)
    print(f"wrote {output}: {len(result.localizations)} localizations from "
          f"{len(frames)} frames")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``kde`` and ``localize`` commands."""
    kd = subparsers.add_parser(
        "kde", help="run the KDE CNN: per-frame KDEs or their sum",
        description="Run the pretrained KDE CNN on raw stacks and write the per-frame KDEs (4x "
                    "grid, pixel size in the metadata) or, with --sum, the summed super-resolution "
                    "image. With several stacks, -o is a folder and each stack gets "
                    "OUT_DIR/<file name>.tif (the model is loaded once).")
    kd.add_argument("-o", "--output", required=True, metavar="OUT.tif|OUT_DIR",
                    help="output TIFF (a folder with several stacks)")
    kd.add_argument("--sum", action="store_true", help="write only the sum over frames")
    kd.add_argument("--drift", metavar="CURVE.csv",
                    help="with --sum and one stack: shift every frame back by this drift curve "
                    "before summing (written by smlm-diffusion drift --curve)")
    add_input_options(kd, several=True, outputs=SEVERAL.format(suffix=".tif"))
    add_run_options(kd)
    kd.set_defaults(func=cmd_kde)

    lo = subparsers.add_parser(
        "localize", help="localize molecules with the KDE CNN",
        description="Detect molecules on the CNN's KDEs, refine them to sub-pixel positions, "
                    "measure photons and background on the raw frame, and write a "
                    "ThunderSTORM-compatible CSV (nm, frames from 1; uncertainty [nm] is the "
                    "per-axis precision (CRLB) of all molecules of the frame fitted together, "
                    "overlaps included). With several stacks, -o is a folder and each stack "
                    "gets OUT_DIR/<file name>.csv (the model is loaded once).")
    lo.add_argument("-o", "--output", required=True, metavar="LOCS.csv|OUT_DIR",
                    help="output CSV (a folder with several stacks)")
    lo.add_argument("--fit", action="store_true",
                    help="fit positions and photons of all molecules of a frame jointly on the raw "
                    "data instead of keeping the KDE peak positions (slower; measured no more "
                    "precise on the benchmark)")
    add_input_options(lo, several=True, outputs=SEVERAL.format(suffix=".csv"))
    add_run_options(lo)
    add_threshold_option(lo)
    add_cluster_options(lo, "localize")
    lo.set_defaults(func=cmd_localize)
