"""The ``posterior`` command: the diffusion posterior of chosen frames."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..inspection import job_sample
from ..posterior_settings import DEFAULT_POSTERIOR, SAMPLER_NAMES
from ..weights import DENOISER_NAME
from .cluster import add_cluster_options, cluster_client, worker_threads
from .options import (
    CliError,
    add_input_options,
    add_run_options,
    apply_model_folder,
    camera_from_args,
    check_distinct_names,
    open_input,
    output_dir,
    positive_int,
    progress_bar,
    warn_after_job,
    warn_before_job,
)


def cmd_posterior(args: argparse.Namespace) -> None:
    from ..io import check_output_dir
    from ..posterior import PosteriorEngine, PosteriorSettings

    settings = PosteriorSettings(samples=args.samples, steps=args.steps, sampler=args.sampler,
                                 seed=args.seed, keep_samples=args.keep_samples)
    check_output_dir(args.out_dir)
    apply_model_folder(args)
    check_distinct_names(args.stacks, "OUT_DIR")
    drift = None
    if args.drift:
        from ..postprocess.drift_curve import read_drift_curve

        if len(args.stacks) > 1:
            raise CliError("--drift takes the drift curve of one acquisition: run the stacks "
                           "one by one, each with its own curve")
        drift = read_drift_curve(args.drift)
    engine = PosteriorEngine.load(args.weights, args.denoiser_weights, args.device)
    with cluster_client(args) as client:
        for path in args.stacks:
            out_dir = Path(args.out_dir) / Path(path).stem if len(args.stacks) > 1 else \
                Path(args.out_dir)
            posterior_of_stack(args, path, out_dir, engine, settings, client, drift)


def posterior_of_stack(args: argparse.Namespace, path: str, out_dir: Path, engine,
                       settings, client=None, drift=None) -> None:
    """The posterior of one stack into ``out_dir`` (streamed, resumable, published at the end;
    on the workers of ``client``, a dask client, when given); with ``drift`` (a curve read from
    ``args.drift``) the summed maps are drift-corrected."""
    import shutil

    from ..frames import check_frame_size
    from ..geometry import fine_pixel_nm, frame_metadata, parse_frame_range
    from ..posterior_outputs import PARTIAL_DIR, publish_posterior, stream_posterior

    with output_dir(str(out_dir)) as out, open_input(path, args.channel) as stack:
        out.mkdir(parents=True, exist_ok=True)
        camera, sigma = camera_from_args(args, stack)
        frames = parse_frame_range(args.frames, stack.data.shape[0])
        if drift is not None:
            from ..postprocess.drift_curve import check_curve_covers

            check_curve_covers(drift, frames, stack.data.shape[0], args.drift)
        check_frame_size(stack.data.shape, sigma, camera.pixel_size)
        sample = job_sample(stack.data, frames)
        warn_before_job(sample, camera, sigma, engine.kde.card)
        fine = fine_pixel_nm(camera.pixel_size, engine.kde.upsampling)
        metadata = {"camera": camera.to_dict(), **frame_metadata(frames),
                    "samples": settings.samples, "steps": settings.steps,
                    "sampler": settings.sampler, "seed": settings.seed,
                    "denoiser_sha256": engine.card.sha256}
        source = Path(path).resolve()
        run_key = {**metadata, "input": str(source), "input_bytes": source.stat().st_size,
                   "input_mtime_ns": source.stat().st_mtime_ns, "channel": args.channel,
                   "psf_sigma_nm": sigma, "keep_samples": settings.keep_samples,
                   "kde_cnn_sha256": engine.kde.card.sha256, "device": engine.device.type}
        # Frames stream into OUT/.posterior-partial (memory does not grow with the range); a
        # stopped run leaves it there for --resume.
        bar, progress = progress_bar(len(frames), "posterior")
        try:
            with bar:
                run = stream_posterior(stack.data, camera, engine, frames, settings, out,
                                       run_key, sigma, resume=args.resume, progress=progress,
                                       source=cluster_source(args, client, stack.data, camera,
                                                             settings, sigma))
        except KeyboardInterrupt:
            print(f"the completed frames are kept in {out / PARTIAL_DIR}: rerun the same "
                  "command with --resume to continue", file=sys.stderr)
            raise
        if run.resumed_at:
            print(f"resumed after frame {run.resumed_at} of {run.frames}")
        calibration = {"std_calibration": engine.card.pixel_variance_calibration,
                       "std_formula": "sqrt((sample_variance_weight * variance over samples "
                       "+ floor) * (local signal + 0.001) ** signal_exponent), local signal = "
                       "mean blurred by a Gaussian of signal_blur_nm"}
        publish_posterior(out, metadata, calibration, fine,
                          None if drift is None else (drift, str(args.drift)))
        warn_after_job(sample, run.molecules)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    kept = ", samples.tif" if settings.keep_samples else ""
    corrected = f" (sums drift-corrected with {args.drift})" if drift is not None else ""
    print(f"wrote mean.tif, std.tif, sum_mean.tif, sum_std.tif{kept} and localizations.csv "
          f"({run.molecules} molecules) to {out}{corrected}")


def cluster_source(args: argparse.Namespace, client, stack, camera, settings, sigma):
    """The source of per-frame posteriors on the workers of ``client`` (a dask client), or
    None (this process)."""
    if client is None:
        return None
    from ..dask_cluster import worker_path
    from ..posterior_distributed import EngineSpec, distributed_source

    spec = EngineSpec(worker_path(args.weights), worker_path(args.denoiser_weights),
                      args.device, worker_threads(args))
    return distributed_source(client, spec, stack, camera, settings, sigma,
                              lambda message: print(message, file=sys.stderr))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``posterior`` command."""
    po = subparsers.add_parser(
        "posterior", help="sample the diffusion posterior of chosen frames",
        description="Sample super-resolved KDEs of each chosen frame from the conditional "
                    "diffusion model and write OUT_DIR/mean.tif, std.tif (per frame, 4x grid, "
                    "pixel size in the metadata; the std is calibrated), sum_mean.tif and "
                    "sum_std.tif (the super-resolution image summed over the frames and its std), "
                    "samples.tif (with --keep-samples) and localizations.csv (ThunderSTORM "
                    "columns; uncertainty [nm] is a per-axis 1-sigma calibrated on simulated "
                    "data: a combination of the molecule's spread over the samples and its "
                    "information-matrix precision on the raw frame, scaled by the local density "
                    "of molecules; plus per-axis columns and the detection probability).")
    po.add_argument("-o", "--out-dir", required=True, metavar="OUT_DIR", help="output folder")
    po.add_argument("--samples", type=positive_int, default=DEFAULT_POSTERIOR.samples,
                    help=f"posterior samples per frame (default {DEFAULT_POSTERIOR.samples})")
    po.add_argument("--steps", type=positive_int, default=DEFAULT_POSTERIOR.steps,
                    help="sampler steps = network evaluations per sample (default "
                    f"{DEFAULT_POSTERIOR.steps})")
    po.add_argument("--sampler", choices=SAMPLER_NAMES, default=DEFAULT_POSTERIOR.sampler,
                    help="dpm-solver (DPM-Solver++ 2M, fast), ddim (deterministic) or ddpm "
                    "(ancestral, the reference; use --steps 100) (default dpm-solver)")
    po.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    po.add_argument("--keep-samples", type=int, default=0, metavar="K",
                    help="write the first K samples of each frame to samples.tif (default 0)")
    po.add_argument("--resume", action="store_true",
                    help="continue a stopped run in OUT_DIR (same input and settings) from its "
                    "last completed frame; the outputs equal those of an uninterrupted run")
    po.add_argument("--drift", metavar="CURVE.csv",
                    help="shift every frame's posterior mean and variance back by this drift "
                    "curve before summing them into sum_mean.tif and sum_std.tif (written by "
                    "smlm-diffusion drift --curve; per-frame maps are not shifted)")
    add_cluster_options(po, "sample")
    po.add_argument("--denoiser-weights", default=DENOISER_NAME, metavar="FILE.safetensors",
                    help="denoiser weights: the shipped model (default) or a .safetensors file "
                    "with its .json model card")
    add_input_options(po, several=True)
    add_run_options(po)
    po.set_defaults(weights=None)  # the shipped CNN the denoiser was trained with
    po.set_defaults(func=cmd_posterior)
