"""The ``posterior`` command: the diffusion posterior of chosen frames."""

from __future__ import annotations

import argparse

from ..inspection import job_sample
from ..posterior_settings import DEFAULT_POSTERIOR, SAMPLER_NAMES
from ..weights import DENOISER_NAME
from .options import (
    add_input_options,
    add_run_options,
    apply_model_folder,
    camera_from_args,
    open_input,
    output_dir,
    positive_int,
    progress_bar,
    warn_after_job,
    warn_before_job,
)


def cmd_posterior(args: argparse.Namespace) -> None:
    import tempfile

    from ..frames import check_frame_size
    from ..geometry import fine_pixel_nm, frame_metadata, parse_frame_range
    from ..io import check_output_dir, write_localizations, write_tiff
    from ..posterior import PosteriorEngine, PosteriorSettings, run_posterior

    settings = PosteriorSettings(samples=args.samples, steps=args.steps, sampler=args.sampler,
                                 seed=args.seed, keep_samples=args.keep_samples)
    check_output_dir(args.out_dir)
    apply_model_folder(args)
    with output_dir(args.out_dir) as out, open_input(args.stack, args.channel) as stack:
        out.mkdir(parents=True, exist_ok=True)
        camera, sigma = camera_from_args(args, stack)
        frames = parse_frame_range(args.frames, stack.data.shape[0])
        check_frame_size(stack.data.shape, sigma, camera.pixel_size)
        engine = PosteriorEngine.load(args.weights, args.denoiser_weights, args.device)
        sample = job_sample(stack.data, frames)
        warn_before_job(sample, camera, sigma, engine.kde.card)
        fine = fine_pixel_nm(camera.pixel_size, engine.kde.upsampling)
        metadata = {"camera": camera.to_dict(), **frame_metadata(frames),
                    "samples": settings.samples, "steps": settings.steps,
                    "sampler": settings.sampler, "seed": settings.seed,
                    "denoiser_sha256": engine.card.sha256}
        # Per-frame maps go to memory-mapped files, so memory does not grow with the range.
        with tempfile.TemporaryDirectory(prefix=".posterior-", dir=out) as scratch:
            bar, progress = progress_bar(len(frames), "posterior")
            with bar:
                result = run_posterior(stack.data, camera, engine, frames, settings, sigma,
                                       progress=progress, storage_dir=scratch)
            write_tiff(out / "mean.tif", result.means, pixel_size_nm=fine, metadata=metadata)
            calibration = {"std_calibration": engine.card.pixel_variance_calibration,
                           "std_formula": "sqrt((sample_variance_weight * variance over samples "
                           "+ floor) * (local signal + 0.001) ** signal_exponent), local signal = "
                           "mean blurred by a Gaussian of signal_blur_nm"}
            write_tiff(out / "std.tif", result.stds, pixel_size_nm=fine,
                       metadata={**metadata, **calibration})
            write_tiff(out / "sum_mean.tif", result.sum_mean, pixel_size_nm=fine,
                       metadata={**metadata, "content": "sum over frames of posterior means"})
            write_tiff(out / "sum_std.tif", result.sum_variance**0.5, pixel_size_nm=fine,
                       metadata={**metadata, **calibration, "content": "sqrt of the sum "
                                 "over frames of the posterior variances"})
            if result.samples is not None:
                samples = result.samples.reshape(-1, *result.samples.shape[-2:])
                write_tiff(out / "samples.tif", samples, pixel_size_nm=fine,
                           metadata={**metadata, "order": "frame-major, then sample"})
        warn_after_job(sample, len(result.localizations))
        write_localizations(out / "localizations.csv", result.localizations)
    kept = ", samples.tif" if settings.keep_samples else ""
    print(f"wrote mean.tif, std.tif, sum_mean.tif, sum_std.tif{kept} and localizations.csv "
          f"({len(result.localizations)} molecules) to {out}")


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
    po.add_argument("--denoiser-weights", default=DENOISER_NAME, metavar="FILE.safetensors",
                    help="denoiser weights: the shipped model (default) or a .safetensors file "
                    "with its .json model card")
    add_input_options(po)
    add_run_options(po)
    po.set_defaults(weights=None)  # the shipped CNN the denoiser was trained with
    po.set_defaults(func=cmd_posterior)
