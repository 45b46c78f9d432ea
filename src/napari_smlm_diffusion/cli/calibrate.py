"""``smlm-diffusion calibrate``: fit the posterior's reported uncertainties and store them."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from ..posterior_settings import DEFAULT_POSTERIOR, SAMPLER_NAMES
from ..weights import DENOISER_NAME, KDE_CNN_NAME
from .options import positive_int

log = logging.getLogger(__name__)


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Run the posterior on the validation regimes, fit, and write the calibration."""
    from ..calibration.validation_runs import calibrate, calibration_regimes, run_regimes
    from ..posterior import PosteriorEngine
    from ..posterior_settings import PosteriorSettings

    if args.from_molecules:
        _refit_from_molecules(args)
        return
    engine = PosteriorEngine.load(args.kde_weights, args.denoiser, device=args.device,
                                  notify=log.info)
    engine.card = replace(engine.card, uncertainty_model=None, pixel_variance_calibration=None,
                          posterior_mean_threshold=engine.card.detection_threshold)
    settings = PosteriorSettings(samples=args.samples, steps=args.steps, sampler=args.sampler)
    regimes = calibration_regimes(args.size, args.densities, args.microscopes)
    runs = run_regimes(engine, regimes, args.frames, settings, progress=log.info)
    record = calibrate(engine, runs, args.molecules)
    record.update({"setting": f"{args.sampler}:{args.steps}", "samples": args.samples,
                   "frames_per_regime": args.frames, "frame_size_px": args.size,
                   "seeds": "800000+ (calibration.validation_runs.CALIBRATION_SEED)"})
    _write_calibration(args, engine.card.raw, record)


def _refit_from_molecules(args: argparse.Namespace) -> None:
    """Refit the per-molecule model on saved molecules and write it into the denoiser's card."""
    import pandas as pd

    from ..calibration.validation_runs import refit_molecule_model
    from ..errors import InputError
    from ..pretrained import load_verified_state

    _, card = load_verified_state(args.denoiser)
    if "calibration" not in card:
        raise InputError(f"the card of {args.denoiser} has no calibration to refit: run "
                         "smlm-diffusion calibrate without --from-molecules first")
    try:
        table = pd.read_csv(args.from_molecules)
        record = refit_molecule_model(card["calibration"], table, Path(args.from_molecules).name)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot refit from {args.from_molecules}: {error}") from None
    _write_calibration(args, card, record)


def _write_calibration(args: argparse.Namespace, card: dict, record: dict) -> None:
    """Log the per-regime results, save the report, and write the card (unless dry run)."""
    from ..io import atomic_write
    from ..pretrained import resolve_weights, update_card, write_model_card

    for name, values in record["regimes"].items():
        log.info("%s: %d molecules, RMS z %s (CRLB alone %s), ZMS %.2f", name,
                 values["molecules"], _fmt(values["rms_z"]), _fmt(values["rms_z_crlb_alone"]),
                 values["zms"])
    if args.report:
        with atomic_write(args.report) as temporary:
            temporary.write_text(json.dumps(record, indent=1))
    if args.dry_run:
        print(json.dumps({k: record[k] for k in ("posterior_mean_threshold",
                                                 "uncertainty_model",
                                                 "pixel_variance_calibration")}, indent=1))
        return
    weights, _ = resolve_weights(args.denoiser)
    saved = write_model_card(weights, update_card(card, calibration=record))
    print(f"calibration written to the model card of {weights} (sha256 "
          f"{saved['sha256'][:12]}...)")


def cmd_calibrate_thresholds(args: argparse.Namespace) -> None:
    """Choose the KDE CNN's detection threshold per PSF width and write it into its card."""
    from ..calibration.detection_thresholds import fit_detection_thresholds
    from ..pipeline import KdeEngine
    from ..pretrained import resolve_weights, write_model_card

    engine = KdeEngine.load(args.weights, device=args.device, notify=log.info)
    record = fit_detection_thresholds(engine.predict, frames=args.frames, progress=log.info)
    if args.dry_run:
        print(json.dumps(record, indent=1))
        return
    weights, _ = resolve_weights(args.weights)
    saved = write_model_card(weights, {**engine.card.raw, "thresholds_by_psf": record})
    print(f"detection thresholds per PSF width written to the model card of {weights} (sha256 "
          f"{saved['sha256'][:12]}...): " + ", ".join(
              f"{p:g} px -> {t:g}" for p, t in zip(record["psf_sigma_px"], record["threshold"],
                                                    strict=True)))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _densities(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected densities like 0.3,1,3, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"densities must be > 0, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` command."""
    parser = subparsers.add_parser(
        "calibrate", help="fit the posterior's reported uncertainty on simulated validation data",
        description="Sample the diffusion posterior on simulated validation regimes (the first "
        "release's condition and the corners of the training ranges, at several densities), "
        "choose the posterior-mean detection threshold and fit the per-molecule uncertainty "
        "(CRLB, spread over samples and crowding; never below the CRLB) and the std map by "
        "maximum likelihood, each regime weighted equally; write them into the denoiser's model "
        "card (the weights are not changed).")
    parser.add_argument("--denoiser", default=DENOISER_NAME,
                        help="denoiser: shipped name or .safetensors with its .json card")
    parser.add_argument("--kde-weights", default=None,
                        help="the KDE CNN the denoiser was trained with (default: the shipped "
                        "one that matches the denoiser's card)")
    parser.add_argument("--frames", type=int, default=32, help="frames per regime")
    parser.add_argument("--size", type=int, default=64, help="frame size in camera pixels")
    parser.add_argument("--densities", type=_densities, default=[0.3, 1.0, 3.0],
                        help="molecules per um^2, comma-separated")
    parser.add_argument("--microscopes", nargs="+", default=None,
                        help="regimes by name (default: all: release and the corners)")
    parser.add_argument("--samples", type=int, default=DEFAULT_POSTERIOR.samples)
    parser.add_argument("--steps", type=int, default=DEFAULT_POSTERIOR.steps)
    parser.add_argument("--sampler", choices=SAMPLER_NAMES, default=DEFAULT_POSTERIOR.sampler)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", type=Path, help="write the full calibration record (JSON)")
    parser.add_argument("--molecules", type=Path,
                        help="save the matched validation molecules (CSV: errors, spread, CRLB, "
                        "density, conditions) for refitting")
    parser.add_argument("--from-molecules", type=Path, metavar="CSV",
                        help="refit only the per-molecule uncertainty model on molecules saved "
                        "by an earlier run with --molecules (same models), keeping the card's "
                        "threshold and std-map calibration; no posterior is sampled")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the fitted values, do not write the card")
    parser.set_defaults(func=cmd_calibrate)

    thresholds = subparsers.add_parser(
        "calibrate-thresholds", help="choose the KDE CNN's detection threshold per PSF width",
        description="Simulate validation sets at PSF widths of 0.7-2.5 camera pixels (sCMOS and "
        "EMCCD, dim and bright, 0.3-3 per um^2, blinking), choose at each width the detection "
        "threshold with the best mean Jaccard index at 100 nm, and write the table into the KDE "
        "CNN's model card (the weights are not changed). Jobs then use the threshold for their "
        "PSF width.")
    thresholds.add_argument("--weights", default=KDE_CNN_NAME,
                            help="KDE CNN: shipped name or .safetensors with its .json card")
    thresholds.add_argument("--frames", type=positive_int, default=16,
                            help="frames per validation set (default 16)")
    thresholds.add_argument("--device", default="auto")
    thresholds.add_argument("--dry-run", action="store_true",
                            help="print the table, do not write the card")
    thresholds.set_defaults(func=cmd_calibrate_thresholds)
