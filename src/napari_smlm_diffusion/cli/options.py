"""Shared pieces of the commands: argument types, option groups, the input stack and camera,
output checks and the progress bar."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import DEFAULT_PSF_SIGMA_PX
from ..weights import KDE_CNN_NAME

PACKAGE_LOGGER = "napari_smlm_diffusion"
logger = logging.getLogger(__name__)


class CliError(InputError):
    """A user error found by the command itself: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """Argument errors as one line (what was wrong, where to read what is expected)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


@contextmanager
def output_dir(path: str):
    """Check the output folder before any work, create it, and write its files as one group:
    on failure no file is replaced (previous outputs stay) and a folder created here is removed
    if it is left empty."""
    from ..io import atomic_group, check_output_dir

    out = check_output_dir(path)
    created = not out.exists()
    try:
        with atomic_group():
            yield out
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def number_or_range(text: str) -> float | tuple[float, float]:
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


def add_input_options(parser: argparse.ArgumentParser, several: bool = False,
                      outputs: str = "its own subfolder of OUT_DIR named after the file") -> None:
    """The raw stack argument (``several``: one or more, each writing ``outputs``) and the
    camera and PSF options of the commands that read it."""
    if several:
        parser.add_argument("stacks", nargs="+", metavar="STACK.tif",
                            help=f"raw SMLM stacks (camera counts, ADU); with several, each "
                            f"gets {outputs}")
    else:
        parser.add_argument("stack", metavar="STACK.tif",
                            help="raw SMLM stack (camera counts, ADU)")
    group = parser.add_argument_group(
        "camera and PSF (default: the values stored in the TIFF by smlm-diffusion simulate or "
        "this plugin, else the --camera preset)")
    group.add_argument("--camera", choices=["sCMOS", "EMCCD"], default="sCMOS",
                       help="preset used for values the file does not give (default sCMOS: "
                       "baseline 100 ADU, 0.46 e-/ADU, gain 1, read noise 1.6 e-, QE 0.82, "
                       "100 nm pixels; EMCCD: baseline 100 ADU, 4.5 e-/ADU, gain 100, read "
                       "noise 50 e-, QE 0.95, 160 nm pixels)")
    group.add_argument("--pixel-size", type=positive_float, metavar="NM",
                       help="camera pixel size in the sample plane, nm")
    group.add_argument("--baseline", type=float, metavar="ADU",
                       help="camera offset, ADU (the value of a dark pixel)")
    group.add_argument("--sensitivity", type=positive_float, metavar="E_PER_ADU",
                       help="electrons per ADU")
    group.add_argument("--em-gain", type=float, metavar="G",
                       help="EM gain (1 for sCMOS)")
    group.add_argument("--quantum-efficiency", type=float, metavar="QE",
                       help="fraction of photons detected, 0-1")
    group.add_argument("--read-noise", type=float, metavar="E",
                       help="read noise, electrons rms")
    group.add_argument("--channel", type=int, metavar="C",
                       help="channel to use (counted from 0) when the TIFF has several")
    group.add_argument("--psf-sigma", type=positive_float, metavar="NM",
                       help="PSF standard deviation in nm, used for photometry (default: file "
                       f"metadata, else {DEFAULT_PSF_SIGMA_PX} camera pixels)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Frame range, device and batch options."""
    parser.add_argument("--frames", metavar="A-B", help="frames to process, counted from 1, "
                        "inclusive (default: all)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), "
                        "cpu, cuda or mps (default auto)")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="frames per network batch (default 32)")
    parser.add_argument("--weights", default=KDE_CNN_NAME, metavar="FILE.safetensors",
                        help="KDE CNN weights: the shipped model (default), the fast one "
                        "(kde_cnn_fast: half the width, the network 1.8x faster on a CPU, about "
                        "2 points of Jaccard index less; localize and kde only, the shipped "
                        "denoiser pairs with kde_cnn), the first release's "
                        "(kde_cnn_v1: narrow training ranges), or a .safetensors file with its "
                        ".json model card next to it (verified by SHA-256)")
    parser.add_argument("--model", metavar="MODEL_DIR",
                        help="models adapted to your microscope (folder written by "
                        "smlm-diffusion adapt); replaces --weights (and --denoiser-weights)")


def add_threshold_option(parser: argparse.ArgumentParser) -> None:
    """The user's detection threshold on the KDE."""
    parser.add_argument("--threshold", type=positive_float, default=None, metavar="T",
                        help="detection threshold on the KDE peaks (default: the model card's "
                        "for your PSF width in camera pixels; lower finds dimmer molecules and "
                        "more false ones)")


def apply_model_folder(args: argparse.Namespace) -> None:
    """Point ``args.weights`` (and ``args.denoiser_weights``) at the ``--model`` folder."""
    if not getattr(args, "model", None):
        return
    from ..pretrained import model_folder_weights

    kde_path, denoiser_path = model_folder_weights(args.model)
    args.weights = str(kde_path)
    if hasattr(args, "denoiser_weights"):
        args.denoiser_weights = str(denoiser_path)


def add_training_options(parser: argparse.ArgumentParser, steps: int, batch_size: int) -> None:
    """Run folder, steps, batch size, seed and resume options of the training commands."""
    parser.add_argument("out_dir", metavar="OUT_DIR", help="run folder")
    parser.add_argument("--steps", type=positive_int, default=steps,
                        help=f"total optimiser steps (default {steps})")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help=f"frames per step (default {batch_size})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT_DIR/checkpoint.safetensors, or fine-tune the "
                        "shipped weights when there is no checkpoint")


def camera_from_args(args: argparse.Namespace, stack) -> tuple:
    """Camera and PSF sigma (nm) from the options, the file's metadata, then the preset."""
    from ..camera import camera_values_from_metadata, preset
    from ..geometry import psf_sigma_or_default

    def ignored(key: str, value: object) -> None:
        if key == "psf_sigma_nm" and args.psf_sigma is not None:
            return  # not used
        what = key if key == "psf_sigma_nm" else f"camera {key}={str(value)[:40]!r}"
        warn(f"{stack.path}: ignoring {what} in the file's metadata (not a number)")

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


def check_distinct_names(stacks: list[str], where: str) -> None:
    """Several input stacks must have distinct file names (their outputs are named after
    them)."""
    stems = [Path(path).stem for path in stacks]
    if len(set(stems)) < len(stems):
        raise CliError(f"several input files share a name; their outputs would collide in "
                       f"{where}: rename them or run them one by one")


def check_output(output: str | Path, stacks: list[str]) -> Path:
    """The output file must be writable and must not be one of the input stacks."""
    from ..io import check_output_file

    output = check_output_file(output)
    for path in map(Path, stacks):
        if output.resolve() == path.resolve() or (
                output.exists() and path.exists() and output.samefile(path)):
            raise CliError(f"{output}: the output would replace the input stack; expected "
                           "another file name")
    return output


def stack_outputs(args: argparse.Namespace, suffix: str) -> list[tuple[str, Path]]:
    """(stack, output file) pairs: ``args.output`` for one stack; for several, ``args.output``
    is a folder (created) holding ``<stack name><suffix>`` for each. Checked before any work."""
    from ..io import check_output_dir

    if len(args.stacks) == 1:
        return [(args.stacks[0], check_output(args.output, args.stacks))]
    check_distinct_names(args.stacks, "OUT_DIR")
    folder = check_output_dir(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    return [(path, check_output(folder / f"{Path(path).stem}{suffix}", args.stacks))
            for path in args.stacks]


def progress_bar(total: int, label: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="frame", disable=not sys.stderr.isatty(),
               dynamic_ncols=True)
    return bar, lambda done, _total: bar.update(done - bar.n)


def open_input(path: str, channel: int | None = None):
    """Open the raw stack; say how a hyperstack's axes were read as frames."""
    from ..io import open_stack

    stack = open_stack(path, channel=channel)
    leading = [(axis, size) for axis, size in zip(stack.source_axes[:-2],
                                                   stack.source_shape[:-2], strict=True)
               if axis != "C" and size > 1]
    if len(leading) > 1:
        axes = "".join(axis for axis, _ in leading)
        sizes = "x".join(str(size) for _, size in leading)
        warn(f"{path}: axes {axes} ({sizes}) are read as {stack.data.shape[0]} frames in "
              "file order")
    return stack


def load_kde_engine(args: argparse.Namespace):
    """The KDE CNN of ``--weights`` (or ``--model``) on ``--device``."""
    from ..pipeline import KdeEngine

    apply_model_folder(args)
    engine = KdeEngine.load(args.weights, device=args.device)
    engine.threshold = getattr(args, "threshold", None)
    return engine


@contextmanager
def kde_session(args: argparse.Namespace, path: str, engine, label: str):
    """Open the stack ``path``, resolve camera, PSF and frames, warn about settings that do
    not fit the data or ``engine``'s model, show a progress bar."""
    from ..frames import check_frame_size
    from ..geometry import parse_frame_range
    from ..inspection import job_sample

    with open_input(path, args.channel) as stack:
        camera, sigma = camera_from_args(args, stack)
        frames = parse_frame_range(args.frames, stack.data.shape[0])
        check_frame_size(stack.data.shape, sigma, camera.pixel_size)
        warn_before_job(job_sample(stack.data, frames), camera, sigma, engine.card)
        bar, progress = progress_bar(len(frames), label)
        with bar:
            yield stack, camera, sigma, frames, progress


def warn(message: str) -> None:
    """A warning of the command: a ``smlm-diffusion: warning: ...`` line on stderr."""
    logger.warning("warning: %s", message)


def warn_before_job(sample: np.ndarray, camera, psf_sigma_nm: float, card) -> None:
    """Warn when the settings look wrong for the data or leave the model's training ranges
    (``card``: the KDE CNN's :class:`model_cards.KdeCnnCard`)."""
    from ..inspection import job_warnings, ranges_of

    for message in job_warnings(sample, camera, psf_sigma_nm, ranges_of(card.training_ranges)):
        warn(message)


def warn_after_job(sample: np.ndarray, n_localizations: int) -> None:
    """Warn when a job found nothing although the frames show clear spots."""
    from ..inspection import no_molecule_warning

    message = no_molecule_warning(sample, n_localizations)
    if message:
        warn(message)


@contextmanager
def log_to_stderr(debug: bool = False) -> Iterator[None]:
    """While a command runs, the package's log records (warnings, the out-of-memory ladder)
    go to stderr as ``smlm-diffusion: message`` lines; ``debug`` shows debug records too."""
    package = logging.getLogger(PACKAGE_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("smlm-diffusion: %(message)s"))
    level, propagate = package.level, package.propagate
    package.addHandler(handler)
    package.setLevel(logging.DEBUG if debug else logging.INFO)
    package.propagate = False  # exactly one line per record, whatever the root logger does
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        package.propagate = propagate
