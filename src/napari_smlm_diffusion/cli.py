"""The ``smlm-diffusion`` command: simulate, evaluate, train and run the models without a GUI."""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import one_line
from .geometry import DEFAULT_PSF_SIGMA_PX
from .posterior_settings import DEFAULT_POSTERIOR, SAMPLER_NAMES
from .simulate import LAYOUTS
from .weights import DENOISER_NAME, KDE_CNN_NAME


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (what was wrong, where to read what is expected)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


@contextmanager
def _output_dir(path: str):
    """Check the output folder before any work, create it, and write its files as one group:
    on failure no file is replaced (previous outputs stay) and a folder created here is removed
    if it is left empty."""
    from .io import atomic_group, check_output_dir

    out = check_output_dir(path)
    created = not out.exists()
    try:
        with atomic_group():
            yield out
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _range(text: str) -> float | tuple[float, float]:
    """Parse "A" or "A-B" / "A:B" into a number or a (low, high) range."""
    parts = text.replace(":", "-").split("-") if "e-" not in text else [text]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or a range LOW-HIGH, got {text!r}"
        ) from None
    if len(values) == 1:
        return values[0]
    if len(values) != 2 or values[0] > values[1]:
        raise argparse.ArgumentTypeError(f"expected a range LOW-HIGH with LOW <= HIGH, got {text}")
    return (values[0], values[1])


def cmd_simulate(args: argparse.Namespace) -> None:
    from .camera import preset
    from .io import write_tiff, write_truth
    from .simulate import SimulationConfig, simulate_stack

    camera = preset(args.camera)
    if args.pixel_size:
        camera = camera.with_values(pixel_size=args.pixel_size)
    config = SimulationConfig(
        size=(args.size, args.size),
        density=args.density,
        photons=args.photons,
        background=args.background,
        psf_sigma_px=args.psf_sigma / camera.pixel_size,
        camera=camera,
        layout=args.layout,
    )
    from .io import check_output_dir

    check_output_dir(args.out_dir)
    stack = simulate_stack(args.frames, config, seed=args.seed)
    metadata = {"camera": camera.to_dict(), "psf_sigma_nm": args.psf_sigma, "seed": args.seed,
                "layout": args.layout, "density_per_um2": args.density, "simulated": True}
    with _output_dir(args.out_dir) as out:
        out.mkdir(parents=True, exist_ok=True)
        write_tiff(out / "stack.tif", stack.frames, pixel_size_nm=camera.pixel_size,
                   metadata=metadata)
        write_truth(out / "truth.csv", stack.truth)
    print(f"wrote {out / 'stack.tif'} ({args.frames} frames of {args.size}x{args.size} px, "
          f"{camera.pixel_size:g} nm pixels) and {out / 'truth.csv'} ({len(stack.truth)} emitters)")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .io import read_localizations
    from .metrics import evaluate, format_table

    truth = read_localizations(args.truth)
    locs = read_localizations(args.locs)
    result = evaluate(truth, locs, args.tolerance)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """The raw stack argument and the camera and PSF options of the commands that read it."""
    parser.add_argument("stack", metavar="STACK.tif", help="raw SMLM stack (camera counts, ADU)")
    group = parser.add_argument_group(
        "camera and PSF (default: the values stored in the TIFF by smlm-diffusion simulate or "
        "this plugin, else the --camera preset)")
    group.add_argument("--camera", choices=["sCMOS", "EMCCD"], default="sCMOS",
                       help="preset used for values the file does not give (default sCMOS: "
                       "baseline 100 ADU, 0.46 e-/ADU, gain 1, read noise 1.6 e-, QE 0.82, "
                       "100 nm pixels; EMCCD: baseline 100 ADU, 4.5 e-/ADU, gain 100, read "
                       "noise 50 e-, QE 0.95, 160 nm pixels)")
    group.add_argument("--pixel-size", type=_positive_float, metavar="NM",
                       help="camera pixel size in the sample plane, nm")
    group.add_argument("--baseline", type=float, metavar="ADU",
                       help="camera offset, ADU (the value of a dark pixel)")
    group.add_argument("--sensitivity", type=_positive_float, metavar="E_PER_ADU",
                       help="electrons per ADU")
    group.add_argument("--em-gain", type=float, metavar="G",
                       help="EM gain (1 for sCMOS)")
    group.add_argument("--quantum-efficiency", type=float, metavar="QE",
                       help="fraction of photons detected, 0-1")
    group.add_argument("--read-noise", type=float, metavar="E",
                       help="read noise, electrons rms")
    group.add_argument("--channel", type=int, metavar="C",
                       help="channel to use (counted from 0) when the TIFF has several")
    group.add_argument("--psf-sigma", type=_positive_float, metavar="NM",
                       help="PSF standard deviation in nm, used for photometry (default: file "
                       f"metadata, else {DEFAULT_PSF_SIGMA_PX} camera pixels)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Frame range, device and batch options."""
    parser.add_argument("--frames", metavar="A-B", help="frames to process, counted from 1, "
                        "inclusive (default: all)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), "
                        "cpu, cuda or mps (default auto)")
    parser.add_argument("--batch-size", type=_positive_int, default=32,
                        help="frames per network batch (default 32)")
    parser.add_argument("--weights", default=KDE_CNN_NAME, metavar="FILE.safetensors",
                        help="KDE CNN weights: the shipped model (default) or a .safetensors "
                        "file with its .json model card next to it (verified by SHA-256)")


def add_training_options(parser: argparse.ArgumentParser, steps: int, batch_size: int) -> None:
    """Run folder, steps, batch size, seed and resume options of the training commands."""
    parser.add_argument("out_dir", metavar="OUT_DIR", help="run folder")
    parser.add_argument("--steps", type=_positive_int, default=steps,
                        help=f"total optimiser steps (default {steps})")
    parser.add_argument("--batch-size", type=_positive_int, default=batch_size,
                        help=f"frames per step (default {batch_size})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT_DIR/checkpoint.safetensors, or fine-tune the "
                        "shipped weights when there is no checkpoint")


def camera_from_args(args: argparse.Namespace, stack) -> tuple:
    """Camera and PSF sigma (nm) from the options, the file's metadata, then the preset."""
    from .camera import camera_values_from_metadata, preset
    from .geometry import psf_sigma_or_default

    def ignored(key: str, value: object) -> None:
        if key == "psf_sigma_nm" and args.psf_sigma is not None:
            return  # not used
        what = key if key == "psf_sigma_nm" else f"camera {key}={str(value)[:40]!r}"
        _warn(f"{stack.path}: ignoring {what} in the file's metadata (not a number)")

    values = preset(args.camera).to_dict()
    stored = camera_values_from_metadata(stack.metadata, on_ignored=ignored)
    stored_sigma = stored.pop("psf_sigma_nm", None)
    sigma = args.psf_sigma or stored_sigma
    values.update(stored)
    if stack.pixel_size_nm:
        values["pixel_size"] = stack.pixel_size_nm
    options = {"pixel_size": args.pixel_size, "baseline": args.baseline,
               "sensitivity": args.sensitivity, "em_gain": args.em_gain,
               "quantum_efficiency": args.quantum_efficiency, "read_noise": args.read_noise}
    values.update({k: v for k, v in options.items() if v is not None})
    camera = preset(args.camera).with_values(**values)
    return camera, psf_sigma_or_default(sigma, camera.pixel_size)


def _check_output(args: argparse.Namespace) -> None:
    """The output file must be writable and must not be the input stack."""
    from .io import check_output_file

    output = check_output_file(args.output)
    stack = Path(args.stack)
    if output.resolve() == stack.resolve() or (
            output.exists() and stack.exists() and output.samefile(stack)):
        raise CliError(f"{output}: the output would replace the input stack; expected another "
                       "file name")


def _progress_bar(total: int, label: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="frame", disable=not sys.stderr.isatty(),
               dynamic_ncols=True)
    return bar, lambda done, _total: bar.update(done - bar.n)


def _open_input(path: str, channel: int | None = None):
    """Open the raw stack; say how a hyperstack's axes were read as frames."""
    from .io import open_stack

    stack = open_stack(path, channel=channel)
    leading = [(axis, size) for axis, size in zip(stack.source_axes[:-2],
                                                   stack.source_shape[:-2], strict=True)
               if axis != "C" and size > 1]
    if len(leading) > 1:
        axes = "".join(axis for axis, _ in leading)
        sizes = "x".join(str(size) for _, size in leading)
        _warn(f"{path}: axes {axes} ({sizes}) are read as {stack.data.shape[0]} frames in "
              "file order")
    return stack


@contextmanager
def _kde_session(args: argparse.Namespace, label: str):
    """Open the stack, resolve camera, PSF, frames and the KDE engine, show a progress bar."""
    from .frames import check_frame_size
    from .geometry import parse_frame_range
    from .pipeline import KdeEngine

    with _open_input(args.stack, args.channel) as stack:
        camera, sigma = camera_from_args(args, stack)
        frames = parse_frame_range(args.frames, stack.data.shape[0])
        check_frame_size(stack.data.shape, sigma, camera.pixel_size)
        engine = KdeEngine.load(args.weights, device=args.device, notify=_warn)
        bar, progress = _progress_bar(len(frames), label)
        with bar:
            yield stack, camera, sigma, frames, engine, progress


def cmd_kde(args: argparse.Namespace) -> None:
    from .geometry import fine_pixel_nm, fine_shape, frame_metadata
    from .io import write_tiff, write_tiff_frames
    from .pipeline import iter_kde, run_kde

    _check_output(args)
    with _kde_session(args, "KDE") as (stack, camera, sigma, frames, engine, progress):
        u = engine.upsampling
        fine = fine_pixel_nm(camera.pixel_size, u)
        metadata = {"camera": camera.to_dict(), **frame_metadata(frames),
                    "model": engine.card.get("name"), "model_sha256": engine.card.get("sha256")}
        if args.sum:
            result = run_kde(stack.data, camera, engine, frames, args.batch_size, sigma,
                             progress=progress, localize=False)
            write_tiff(args.output, result.sum_image, pixel_size_nm=fine, metadata=metadata)
        else:
            def kde_frames():
                done = 0
                for batch in iter_kde(stack.data, camera, engine, frames, args.batch_size,
                                      sigma, localize=False):
                    yield from batch.kdes
                    done += len(batch.frames)
                    progress(done, len(frames))

            rows, cols = stack.data.shape[-2:]
            write_tiff_frames(args.output, kde_frames(), fine_shape((len(frames), rows, cols), u),
                              pixel_size_nm=fine, metadata=metadata)
    what = ("summed KDE (super-resolution image)" if args.sum
            else f"{len(frames)} KDE frame{'' if len(frames) == 1 else 's'}")
    print(f"wrote {args.output}: {what} on a {fine:g} nm grid")


def cmd_localize(args: argparse.Namespace) -> None:
    from .io import write_localizations
    from .pipeline import run_kde

    _check_output(args)
    with _kde_session(args, "localize") as (stack, camera, sigma, frames, engine, progress):
        result = run_kde(stack.data, camera, engine, frames, args.batch_size, sigma,
                         progress=progress, refine=args.fit)
    write_localizations(args.output, result.localizations)
    print(f"wrote {args.output}: {len(result.localizations)} localizations from "
          f"{len(frames)} frames")


def cmd_posterior(args: argparse.Namespace) -> None:
    import tempfile

    from .frames import check_frame_size
    from .geometry import fine_pixel_nm, frame_metadata, parse_frame_range
    from .io import check_output_dir, write_localizations, write_tiff
    from .posterior import PosteriorEngine, PosteriorSettings, run_posterior

    settings = PosteriorSettings(samples=args.samples, steps=args.steps, sampler=args.sampler,
                                 seed=args.seed, keep_samples=args.keep_samples)
    check_output_dir(args.out_dir)
    with _output_dir(args.out_dir) as out, _open_input(args.stack, args.channel) as stack:
        out.mkdir(parents=True, exist_ok=True)
        camera, sigma = camera_from_args(args, stack)
        frames = parse_frame_range(args.frames, stack.data.shape[0])
        check_frame_size(stack.data.shape, sigma, camera.pixel_size)
        engine = PosteriorEngine.load(args.weights, args.denoiser_weights, args.device, _warn)
        fine = fine_pixel_nm(camera.pixel_size, engine.kde.upsampling)
        metadata = {"camera": camera.to_dict(), **frame_metadata(frames),
                    "samples": settings.samples, "steps": settings.steps,
                    "sampler": settings.sampler, "seed": settings.seed,
                    "denoiser_sha256": engine.card.get("sha256")}
        # Per-frame maps go to memory-mapped files, so memory does not grow with the range.
        with tempfile.TemporaryDirectory(prefix=".posterior-", dir=out) as scratch:
            bar, progress = _progress_bar(len(frames), "posterior")
            with bar:
                result = run_posterior(stack.data, camera, engine, frames, settings, sigma,
                                       progress=progress, storage_dir=scratch)
            write_tiff(out / "mean.tif", result.means, pixel_size_nm=fine, metadata=metadata)
            calibration = {"std_calibration": engine.card.get("pixel_variance_calibration"),
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
        write_localizations(out / "localizations.csv", result.localizations)
    kept = ", samples.tif" if settings.keep_samples else ""
    print(f"wrote mean.tif, std.tif, sum_mean.tif, sum_std.tif{kept} and localizations.csv "
          f"({len(result.localizations)} molecules) to {out}")


def _warn(message: str) -> None:
    print(f"smlm-diffusion: {message}", file=sys.stderr)


def cmd_train_diffusion(args: argparse.Namespace) -> None:
    from .train import DiffusionTrainingConfig, train_denoiser

    config = DiffusionTrainingConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    best = train_denoiser(args.out_dir, config, resume=args.resume)
    print(f"best weights: {best}")


def cmd_train_kde(args: argparse.Namespace) -> None:
    from .train import KdeTrainingConfig, train_kde_cnn

    config = KdeTrainingConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    best = train_kde_cnn(args.out_dir, config, resume=args.resume)
    print(f"best weights: {best}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``smlm-diffusion`` (all options documented with units)."""
    parser = _Parser(
        prog="smlm-diffusion",
        description="Single-molecule localization microscopy with a KDE CNN and a conditional "
        "diffusion posterior. Coordinates are in nm from the top-left corner of the top-left "
        "pixel; frames are counted from 1 in CSV tables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (for bug reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sim = sub.add_parser("simulate", help="simulate a blinking SMLM stack with ground truth",
                         description="Write OUT_DIR/stack.tif (uint16 ADU, pixel size in the "
                         "metadata) and OUT_DIR/truth.csv (ThunderSTORM columns, frames from 1).")
    sim.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created if missing)")
    sim.add_argument("--frames", type=_positive_int, default=100, help="number of frames "
                     "(default 100)")
    sim.add_argument("--size", type=_positive_int, default=64,
                     help="frame width and height in camera pixels (default 64)")
    sim.add_argument("--density", type=_range, default=1.0,
                     help="active emitters per um^2 per frame, a number or a range LOW-HIGH "
                     "(default 1)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--camera", choices=["sCMOS", "EMCCD"], default="sCMOS",
                     help="camera preset: sCMOS (100 nm pixels, 0.46 e-/ADU, 1.6 e- read noise) "
                     "or EMCCD (160 nm pixels, EM gain 100, 4.5 e-/ADU) (default sCMOS)")
    sim.add_argument("--pixel-size", type=_positive_float, default=None,
                     help="camera pixel size in nm (default: the preset's)")
    sim.add_argument("--layout", choices=LAYOUTS, default="filaments",
                     help="where emitters sit (default filaments)")
    sim.add_argument("--photons", type=_range, default=(1000.0, 5000.0),
                     help="photons per emitter per frame, a number or a range LOW-HIGH drawn "
                     "log-uniformly (default 1000-5000)")
    sim.add_argument("--background", type=_range, default=50.0,
                     help="background photons per pixel, a number or a range (default 50)")
    sim.add_argument("--psf-sigma", type=_positive_float, default=120.0,
                     help="PSF standard deviation in nm (default 120)")
    sim.set_defaults(func=cmd_simulate)

    ev = sub.add_parser("evaluate", help="score localizations against ground truth",
                        description="Match localizations to the truth per frame (Hungarian "
                        "method) and print Jaccard, RMSE, efficiency, precision, recall.")
    ev.add_argument("truth", metavar="TRUTH.csv", help="ground-truth table (ThunderSTORM CSV)")
    ev.add_argument("locs", metavar="LOCS.csv", help="localization table (ThunderSTORM CSV)")
    ev.add_argument("--tolerance", type=_positive_float, default=250.0,
                    help="matching radius in nm (default 250)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.set_defaults(func=cmd_evaluate)

    kd = sub.add_parser("kde", help="run the KDE CNN: per-frame KDEs or their sum",
                        description="Run the pretrained KDE CNN on a raw stack and write the "
                        "per-frame KDEs (4x grid, pixel size in the metadata) or, with --sum, "
                        "the summed super-resolution image.")
    kd.add_argument("-o", "--output", required=True, metavar="OUT.tif", help="output TIFF")
    kd.add_argument("--sum", action="store_true", help="write only the sum over frames")
    add_input_options(kd)
    add_run_options(kd)
    kd.set_defaults(func=cmd_kde)

    lo = sub.add_parser("localize", help="localize molecules with the KDE CNN",
                        description="Detect molecules on the CNN's KDEs, refine them to "
                        "sub-pixel positions, measure photons and background on the raw frame, "
                        "and write a ThunderSTORM-compatible CSV (nm, frames from 1; "
                        "uncertainty [nm] is the per-axis precision (CRLB) of all molecules of "
                        "the frame fitted together, overlaps included).")
    lo.add_argument("-o", "--output", required=True, metavar="LOCS.csv", help="output CSV")
    lo.add_argument("--fit", action="store_true",
                    help="fit positions and photons of all molecules of a frame jointly on the raw "
                    "data instead of keeping the KDE peak positions (slower; measured no more "
                    "precise on the benchmark)")
    add_input_options(lo)
    add_run_options(lo)
    lo.set_defaults(func=cmd_localize)

    po = sub.add_parser("posterior", help="sample the diffusion posterior of chosen frames",
                        description="Sample super-resolved KDEs of each chosen frame from the "
                        "conditional diffusion model and write OUT_DIR/mean.tif, std.tif (per "
                        "frame, 4x grid, pixel size in the metadata), sum_mean.tif and "
                        "sum_std.tif (the super-resolution image summed over the frames and its "
                        "std), samples.tif (with --keep-samples) and localizations.csv "
                        "(ThunderSTORM columns; uncertainty [nm] is the per-axis spread over "
                        "samples, plus per-axis columns and the detection probability).")
    po.add_argument("-o", "--out-dir", required=True, metavar="OUT_DIR", help="output folder")
    po.add_argument("--samples", type=_positive_int, default=DEFAULT_POSTERIOR.samples,
                    help=f"posterior samples per frame (default {DEFAULT_POSTERIOR.samples})")
    po.add_argument("--steps", type=_positive_int, default=DEFAULT_POSTERIOR.steps,
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
    po.set_defaults(func=cmd_posterior)

    td = sub.add_parser("train-diffusion", help="train the conditional diffusion denoiser",
                        description="Train the conditional denoiser on simulated frames (same "
                        "conditions as train-kde) against the residual between the true KDE and "
                        "the shipped KDE CNN's estimate. Writes checkpoints, log.jsonl and "
                        "best.safetensors + best.json (model card) to OUT_DIR.")
    add_training_options(td, steps=4000, batch_size=8)
    td.set_defaults(func=cmd_train_diffusion)

    tk = sub.add_parser("train-kde", help="train the KDE CNN on simulated data",
                        description="Train the KDE CNN on freshly simulated frames (densities "
                        "0.1-6 per um^2, 500-10000 photons, background 10-150 photons/px, PSF "
                        "sigma 0.8-1.6 px, sCMOS and EMCCD, all layouts). Writes checkpoints, "
                        "log.jsonl and best.safetensors + best.json (model card) to OUT_DIR.")
    add_training_options(tk, steps=6000, batch_size=16)
    tk.set_defaults(func=cmd_train_kde)
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


if __name__ == "__main__":
    sys.exit(main())
