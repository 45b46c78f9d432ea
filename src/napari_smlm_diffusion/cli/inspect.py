"""``smlm-diffusion inspect``: estimate camera, PSF, background, photons and density from a raw
stack and compare them with the given settings and the models' training ranges."""

from __future__ import annotations

import argparse
import math

from ..inspection import check_settings, inspect_stack, training_ranges
from ..inspection.report import DEFAULT_FRAMES, MIN_FRAMES, InspectionReport
from .options import add_input_options, camera_from_args


def _frame_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < MIN_FRAMES:
        raise argparse.ArgumentTypeError(
            f"expected a number of frames >= {MIN_FRAMES}, got {text!r}")
    return value


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``inspect`` command to the ``smlm-diffusion`` subparsers."""
    parser = subparsers.add_parser(
        "inspect", help="estimate camera, PSF, background, photons and density from the data",
        description="Estimate from the raw frames alone: the baseline (ADU), the sensitivity "
        "(e-/ADU, at the given EM gain) and read noise (e-) by photon transfer of the background "
        "pixels, the PSF sigma (nm) from isolated spots, the per-frame background and the "
        "photons of spots (photons, with the given quantum efficiency) and the density of "
        "detected spots (per um^2 per frame), each with a standard error; compare them with the "
        "given camera settings and the KDE CNN's training ranges.")
    add_input_options(parser)
    parser.add_argument("--frames", type=_frame_count, default=DEFAULT_FRAMES, metavar="N",
                        help=f"frames read, spread over the stack (default {DEFAULT_FRAMES}, "
                        f"at least {MIN_FRAMES})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=cmd_inspect)
    return parser


def cmd_inspect(args: argparse.Namespace) -> None:
    """Run the inspection and print the table (or JSON) and the warnings."""
    from ..io import open_stack

    with open_stack(args.stack, channel=args.channel) as stack:
        camera, sigma_nm = camera_from_args(args, stack)
        report = inspect_stack(stack.data, camera, n_frames=args.frames)
    ranges = training_ranges()
    report.warnings = check_settings(report, camera, sigma_nm, ranges)
    print(report.to_json() if args.json else format_report(report, sigma_nm, ranges))


def _status(warnings: list[str], marker: str, flagged: str, fine: str = "ok") -> str:
    """``flagged`` when one of the warnings contains ``marker``, else ``fine``."""
    return flagged if any(marker in warning for warning in warnings) else fine


def format_report(report: InspectionReport, sigma_nm: float, ranges: dict) -> str:
    """The report as a readable table followed by the notes and warnings (the status column
    repeats what the warnings say)."""
    cam = report.camera
    warned = report.warnings
    sensitivity_status = _status(warned, "camera sensitivity", "off")
    baseline_status = ("unsure (sensitivity off)" if sensitivity_status == "off"
                       else _status(warned, "camera baseline", "above dark level"))
    psf_status = _status(warned, f"PSF sigma {sigma_nm:g} nm", "check",
                         _status(warned, "PSF sigma", "outside training range",
                                 "in training range"))
    inside = "in training range"

    def span(key: str) -> str:
        return "{:g}-{:g} (training)".format(*ranges[key]) if key in ranges else "-"

    rows = [
        ("baseline [ADU]", "baseline_adu", f"{cam['baseline']:g}", baseline_status),
        ("sensitivity [e-/ADU]", "sensitivity_e_per_adu", f"{cam['sensitivity']:g}",
         sensitivity_status),
        ("read noise [e-]", "read_noise_e", f"{cam['read_noise']:g}",
         "measured" if report.read_noise_e_uncertainty < 0.5 * report.read_noise_e
         else "not measurable"),
        ("PSF sigma [nm]", "psf_sigma_nm", f"{sigma_nm:g}", psf_status),
        ("photons per spot (median)", "photons_median", span("photons"),
         _status(warned, "median photons per spot", "outside training range", inside)),
        ("background [photons/px] (median)", "background_median_photons", span("background"),
         _status(warned, "background ", "outside training range", inside)),
        ("density [/um^2/frame]", "density_per_um2", "-", "-"),
    ]
    header = ("quantity", "estimate", "+/-", "given", "status")
    def error(value: float) -> str:
        return f"{value:.2g}" if math.isfinite(value) else "-"

    table = [header] + [(label, f"{report.estimate(key)[0]:.4g}",
                         error(report.estimate(key)[1]), given, status)
                        for label, key, given, status in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(f"\n{report.n_frames} frames, {report.n_background_values} background pixel "
                 f"values, {report.n_spots} spots "
                 f"({report.frames_with_spots} frames with spots), "
                 f"{report.n_isolated_spots} isolated spots fitted for the PSF; "
                 f"pixel size {cam['pixel_size']:g} nm, EM gain {cam['em_gain']:g}, "
                 f"QE {cam['quantum_efficiency']:g}")
    lines += [f"note: {note}" for note in report.notes]
    lines += [f"warning: {warning}" for warning in report.warnings]
    return "\n".join(lines)
