"""Benchmark our KDE-CNN localizer against Picasso's MLE Gaussian fit on simulated SMLM data.

Both methods see the same simulated test sets in the same run and are scored with the SMLM
challenge metrics of :func:`napari_smlm_diffusion.metrics.evaluate` (Jaccard index, lateral RMSE
and efficiency at 250 nm and at 100 nm matching tolerance). Picasso gets the net-gradient
threshold with the best Jaccard index on the ground truth of each test set (an oracle setting
that favours it). Throughput is the wall time of the localization call alone (after a warm-up
call that triggers JIT compilation or model set-up), on ``--size`` x ``--size`` frames.

Test sets: filaments at 0.3, 1, 3 and 6 active emitters per um^2 (plus a uniform field at 0.3),
each on an sCMOS and an EMCCD camera (presets at 100 nm pixels), photons log-uniform in
[1000, 5000], 50 background photons per pixel, PSF sigma 1.2 px. Seeds start at 500000 (never
used in training; see :func:`condition_seed`). At 0.3 per um^2 the table also gives the
Cramer-Rao bound of the true emitters next to the RMSE.

Run with Picasso in its own environment (see picasso_baseline.py)::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 /work/venv-bench/bin/python benchmarks/bench_kde.py \
        --quick --methods picasso

"ours" is the KDE CNN with positions from the KDE peaks (the package default; detection threshold
from the card for the PSF width), "ours-single" the same with the card's single threshold (the first
release's behaviour), "ours-v1" the first release's KDE CNN (``kde_cnn_v1``, narrow training
ranges) with its card's thresholds per PSF width, "ours-fast" the width-16 KDE CNN
(``kde_cnn_fast``, same ranges as ``kde_cnn``, about half its arithmetic), "ours-fit" adds
the joint fit of all detections on the raw frame. When the shipped weights are missing, the
benchmark runs Picasso alone (unless only our methods were asked for).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from napari_smlm_diffusion.blinking import Blinking
from napari_smlm_diffusion.camera import Camera, preset
from napari_smlm_diffusion.metrics import evaluate
from napari_smlm_diffusion.psf import crlb_xy_nm
from napari_smlm_diffusion.simulate import SimulationConfig, detectable_truth, simulate_stack
from napari_smlm_diffusion.training_data import (
    MICROSCOPE_CORNERS,
    REALISTIC_BLINKING,
    KdeTrainingConfig,
)
from napari_smlm_diffusion.weights import KDE_CNN_FAST_NAME, KDE_CNN_V1_NAME

sys.path.insert(0, str(Path(__file__).resolve().parent))
import picasso_baseline  # noqa: E402  (sibling module; Picasso itself is imported lazily)

SEED_BASE = 500_000
SEED_LAYOUTS = ("filaments", "uniform")  # layout index in the seed, see condition_seed
DENSITIES = (0.3, 1.0, 3.0, 6.0)
CAMERAS = ("sCMOS", "EMCCD")
PIXEL_SIZE_NM = 100.0
PHOTONS = (1000.0, 5000.0)
BACKGROUND = 50.0
PSF_SIGMA_PX = 1.2
TOLERANCES_NM = (250.0, 100.0)
METHODS = ("ours", "ours-v1", "ours-fast", "ours-single", "ours-fit", "picasso",
           "picasso-legacy")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_kde"
Localizer = Callable[[np.ndarray, Camera, float], pd.DataFrame]


@dataclass(frozen=True)
class Condition:
    """One simulated test set."""

    camera_name: str
    layout: str
    density: float
    seed: int
    camera: Camera = None
    photons: tuple[float, float] = PHOTONS
    background: float = BACKGROUND
    psf_sigma_px: float = PSF_SIGMA_PX
    blinking: Blinking | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.camera is None:
            object.__setattr__(self, "camera", preset(self.camera_name,
                                                      pixel_size=PIXEL_SIZE_NM))

    @property
    def name(self) -> str:
        prefix = f"{self.label} " if self.label else ""
        return f"{prefix}{self.camera_name} {self.layout} {self.density:g}/um2"

    def config(self, size: int) -> SimulationConfig:
        return SimulationConfig(
            size=(size, size),
            density=self.density,
            photons=self.photons,
            background=self.background,
            psf_sigma_px=self.psf_sigma_px,
            camera=self.camera,
            layout=self.layout,
            blinking=self.blinking,
        )


def condition_seed(layout: str, density: float) -> int:
    """Seed of a test set: SEED_BASE + 1000 * layout index + 100 * density.

    It depends only on the layout and the density, so a test set keeps its seed whatever subset
    is run, and the sCMOS and EMCCD test sets of one layout and density share the structure and
    the emitter positions of the first frame (the noise draws then differ between cameras).
    """
    return SEED_BASE + 1000 * SEED_LAYOUTS.index(layout) + int(round(100 * density))


def conditions(
    cameras=CAMERAS, densities=DENSITIES, uniform_sparse: bool = True
) -> list[Condition]:
    """The test sets: filaments at each density, plus a uniform field at densities <= 0.3."""
    specs = []
    for camera_name in cameras:
        for density in densities:
            specs.append((camera_name, "filaments", float(density)))
        if uniform_sparse:
            specs += [(camera_name, "uniform", float(d)) for d in densities if d <= 0.3 + 1e-9]
    return [Condition(c, layout, d, condition_seed(layout, d)) for c, layout, d in specs]


MICROSCOPE_DENSITIES = (0.3, 1.0, 3.0)
MICROSCOPE_SEED_BASE = 600_000
MIN_SNR = KdeTrainingConfig().kde_min_snr  # truth of blinking test sets: emitters above it


def microscope_conditions(densities=MICROSCOPE_DENSITIES) -> list[Condition]:
    """Test sets at the corners of the training ranges (training_data.MICROSCOPE_CORNERS):
    filaments of blinking fluorophores."""
    result = []
    for k, (label, scope) in enumerate(MICROSCOPE_CORNERS.items()):
        for density in densities:
            seed = MICROSCOPE_SEED_BASE + 1000 * k + int(round(100 * density))
            result.append(Condition(scope.kind, "filaments", float(density), seed, scope.camera,
                                    scope.photons, scope.background, scope.psf_sigma_px,
                                    REALISTIC_BLINKING, label))
    return result


# --------------------------------------------------------------------------- methods


def make_ours(device: str = "cpu", batch_size: int | None = None,
              weights: str | None = None, refine: bool = True,
              single_threshold: bool = False) -> Localizer:
    """Our localizer with the model loaded (and verified) once, outside the timed calls.

    ``refine`` selects KDE-peak positions ("ours", the default of the package) or the joint fit
    of all detections on the raw frame ("ours-fit"); ``single_threshold`` uses the card's one
    detection threshold for every PSF width ("ours-single", the first release's behaviour)
    instead of its table per PSF width.
    """
    from napari_smlm_diffusion.pipeline import KdeEngine, run_kde

    load = {"device": device} if weights is None else {"device": device, "weights": weights}
    engine = KdeEngine.load(**load, notify=lambda message: None)
    if single_threshold:
        engine.threshold = engine.card.detection_threshold
    extra = {} if batch_size is None else {"batch_size": int(batch_size)}

    def ours(frames: np.ndarray, camera: Camera, psf_sigma_nm: float) -> pd.DataFrame:
        return run_kde(frames, camera, engine, psf_sigma_nm=psf_sigma_nm, refine=refine,
                       **extra).localizations

    return ours


def interior(table: pd.DataFrame, size: int, pixel_size: float, border_px: float) -> pd.DataFrame:
    """Rows of a localization table farther than ``border_px`` pixels from the frame edges."""
    low, high = border_px * pixel_size, (size - border_px) * pixel_size
    x, y = table["x_nm"].to_numpy(), table["y_nm"].to_numpy()
    return table[(x >= low) & (x < high) & (y >= low) & (y < high)]


def crlb_summary(
    truth: pd.DataFrame, camera: Camera, psf_sigma_px: float, background: float
) -> dict:
    """sqrt(mean CRLB) of the true emitters, lateral and per axis, in nm.

    The bound is computed in detected photo-electrons (photons and background times the quantum
    efficiency, read noise in electrons referred to the input of the EM register, excess noise
    sqrt 2 on an EMCCD), which is the noise model of the simulator. ``lateral_nm`` is
    ``sqrt(mean(crlb_x + crlb_y))``, the bound for ``rmse_lateral_nm``. ``lateral_nm_arriving``
    is the same bound computed with arriving photons and ``camera.read_noise_photons`` (i.e.
    ignoring the photons lost to the quantum efficiency); it is lower by about sqrt(QE).
    """
    qe = camera.quantum_efficiency
    px = camera.pixel_size
    variances, variances_arriving = [], []
    for x_nm, y_nm, photons in truth[["x_nm", "y_nm", "photons"]].itertuples(index=False):
        sx, sy = crlb_xy_nm(
            x_nm / px,
            y_nm / px,
            photons * qe,
            background * qe,
            psf_sigma_px,
            px,
            read_noise_photons=camera.read_noise / camera.em_gain,
            excess_noise=camera.excess_noise,
        )
        variances.append((sx * sx, sy * sy))
        ax, ay = crlb_xy_nm(
            x_nm / px,
            y_nm / px,
            photons,
            background,
            psf_sigma_px,
            px,
            read_noise_photons=camera.read_noise_photons,
            excess_noise=camera.excess_noise,
        )
        variances_arriving.append((ax * ax, ay * ay))
    if not variances:
        return {
            "n": 0,
            "lateral_nm": float("nan"),
            "x_nm": float("nan"),
            "y_nm": float("nan"),
            "lateral_nm_arriving": float("nan"),
        }
    v = np.asarray(variances)
    va = np.asarray(variances_arriving)
    return {
        "n": len(v),
        "lateral_nm": float(np.sqrt(v.sum(axis=1).mean())),
        "x_nm": float(np.sqrt(v[:, 0].mean())),
        "y_nm": float(np.sqrt(v[:, 1].mean())),
        "lateral_nm_arriving": float(np.sqrt(va.sum(axis=1).mean())),
    }


def score(
    truth: pd.DataFrame, locs: pd.DataFrame, size: int, pixel_size: float, border_px: float
) -> dict:
    """Metrics at each tolerance, over the whole field and away from the border."""
    result = {}
    for tolerance in TOLERANCES_NM:
        result[f"tol{tolerance:g}"] = evaluate(truth, locs, tolerance)
    result["interior_tol250"] = evaluate(
        interior(truth, size, pixel_size, border_px),
        interior(locs, size, pixel_size, border_px),
        250.0,
    )
    return result


def _standard(locs: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in ("frame", "x_nm", "y_nm", "photons") if c in locs.columns]
    out = locs[columns].copy()
    out["frame"] = out["frame"].astype(np.int64)
    return out.reset_index(drop=True)


def timed(localize: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    locs = localize()
    return locs, time.perf_counter() - start


# --------------------------------------------------------------------------- run


def run_condition(condition: Condition, methods: dict[str, Localizer | None], args) -> dict:
    """Simulate one test set and run every method on it."""
    camera = condition.camera
    config = condition.config(args.size)
    start = time.perf_counter()
    stack = simulate_stack(args.frames, config, seed=condition.seed, with_kde=False)
    simulate_s = time.perf_counter() - start
    frames, truth = stack.frames, stack.truth
    if condition.blinking is not None:
        # Fluorophores on for a sliver of a frame give a few photons that no method can see:
        # both methods are scored on the emitters above the SNR floor of the training targets.
        truth = detectable_truth(truth, condition.psf_sigma_px, condition.background, MIN_SNR)
    psf_sigma_nm = condition.psf_sigma_px * camera.pixel_size
    record = {
        "condition": condition.name,
        "camera": condition.camera_name,
        "camera_parameters": camera.to_dict(),
        "layout": condition.layout,
        "density_per_um2": condition.density,
        "seed": condition.seed,
        "frames": int(frames.shape[0]),
        "frame_size_px": int(args.size),
        "n_truth": len(truth),
        "simulate_s": simulate_s,
        "methods": {},
    }
    if condition.density <= 0.3 + 1e-9:
        record["crlb"] = crlb_summary(truth, camera, condition.psf_sigma_px,
                                      condition.background)
    for name, localizer in methods.items():
        entry: dict = {}
        try:
            if name.startswith("picasso"):
                fit = "gaussmle-legacy" if name == "picasso-legacy" else "gaussmle"
                sweep_start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    threshold, best = picasso_baseline.best_threshold(
                        frames, truth, camera, box=args.box, method=fit
                    )
                entry["threshold_sweep_s"] = time.perf_counter() - sweep_start
                entry["warnings"] = [str(w.message) for w in caught]
                entry["min_net_gradient"] = threshold
                entry["min_net_gradient_photon_equivalents"] = threshold / camera.adu_per_photon
                entry["box"] = args.box
                entry["fit"] = fit
                entry["sweep"] = best["sweep"]
                # The sweep already ran (and JIT-compiled) Picasso: this call is warm.
                locs, seconds = timed(
                    lambda fit=fit, threshold=threshold: picasso_baseline.picasso_localize(
                        frames, camera, threshold, args.box, fit
                    )
                )
            else:
                localizer(frames[: min(2, len(frames))], camera, psf_sigma_nm)  # warm-up
                locs, seconds = timed(
                    lambda localizer=localizer: localizer(frames, camera, psf_sigma_nm)
                )
            locs = _standard(locs)
            entry["seconds"] = seconds
            entry["frames_per_s"] = len(frames) / seconds if seconds > 0 else float("inf")
            entry.update(score(truth, locs, args.size, camera.pixel_size, args.border_px))
        except Exception as error:  # noqa: BLE001 - one failing method must not end the run
            entry = {
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
            print(f"  {name}: FAILED {entry['error']}", flush=True)
        record["methods"][name] = entry
        if "error" not in entry:
            m = entry["tol250"]
            print(
                f"  {name:15s} J={m['jaccard']:5.1f}% RMSE={m['rmse_lateral_nm']:5.1f} nm "
                f"eff={m['efficiency']:6.1f}  J100={entry['tol100']['jaccard']:5.1f}% "
                f"{entry['frames_per_s']:8.1f} frames/s"
                + (f"  ng>{entry['min_net_gradient']:.0f}" if "min_net_gradient" in entry else ""),
                flush=True,
            )
    return record


# --------------------------------------------------------------------------- output


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _metric(record: dict, method: str, key: str, field: str, digits: int = 1) -> str:
    entry = record["methods"].get(method, {})
    if "error" in entry or key not in entry:
        return "fail" if "error" in entry else "n/a"
    return _fmt(entry[key][field], digits)


def suite_text(meta: dict) -> str:
    """What the test sets of the run's suite are."""
    if meta.get("suite") == "microscopes":
        corners = "; ".join(
            f"{label}: {scope.kind}, {scope.camera.pixel_size:g} nm pixels, photons "
            f"{scope.photons[0]:g}-{scope.photons[1]:g}, background {scope.background:g}/px, "
            f"PSF {scope.psf_sigma_px:g} px" for label, scope in MICROSCOPE_CORNERS.items())
        blink = REALISTIC_BLINKING
        return (f"filaments with blinking fluorophores (on {blink.on_time:g} frames, off "
                f"{blink.off_time:g}, brightness spread {blink.photon_spread:g}); {corners}; "
                f"seeds from {MICROSCOPE_SEED_BASE}; scored on the emitters with a signal-to-noise "
                f"ratio N / sqrt(N + 4 pi s^2 b) >= {MIN_SNR:g} in their frame (fluorophores on "
                "for a sliver of a frame are left out, for both methods).")
    return (f"{meta['pixel_size_nm']:g} nm pixels; photons log-uniform {meta['photons'][0]:g}-"
            f"{meta['photons'][1]:g}; background {meta['background']:g} photons/px; PSF sigma "
            f"{meta['psf_sigma_px']:g} px; seeds from {meta['seed_base']}.")


def markdown(results: dict) -> str:
    """Markdown report: one table per tolerance plus throughput, methods side by side."""
    methods = results["methods"]
    records = results["conditions"]
    meta = results["meta"]
    lines = [
        "# KDE benchmark: ours vs Picasso (MLE Gaussian)",
        "",
        f"{meta['frames_per_condition']} frames of {meta['frame_size_px']}x"
        f"{meta['frame_size_px']} px per condition; " + suite_text(meta)
        + f" Picasso {meta['picasso_version']}: MLE Gaussian fit, box "
        f"{meta['box']}, net-gradient threshold with the best Jaccard (250 nm) on the ground truth "
        "of each condition. Jaccard and efficiency in %, RMSE lateral in nm over the matches; "
        "CRLB = sqrt(mean CRLB) lateral of the true emitters (0.3/um2 only).",
        "",
        f"Command: `{meta['command']}`",
        "",
    ]
    for tolerance in TOLERANCES_NM:
        key = f"tol{tolerance:g}"
        header = ["Condition"]
        if tolerance == 250.0:
            header.append("CRLB")
        for label in ("Jaccard", "RMSE", "Efficiency"):
            header += [f"{label} {m}" for m in methods]
        lines += [
            f"## Tolerance {tolerance:g} nm",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for record in records:
            row = [record["condition"]]
            if tolerance == 250.0:
                row.append(_fmt(record.get("crlb", {}).get("lateral_nm")))
            for field in ("jaccard", "rmse_lateral_nm", "efficiency"):
                row += [_metric(record, m, key, field) for m in methods]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    border = meta["border_px"]
    header = (
        ["Condition"]
        + [f"frames/s {m}" for m in methods]
        + [f"Jaccard interior {m}" for m in methods]
        + ["Picasso ng threshold (ADU)"]
    )
    lines += [
        "## Throughput and border",
        "",
        f"frames/s: wall time of the localization call alone ({meta['threads']}). "
        f"Jaccard interior: 250 nm tolerance, truth and localizations more than {border:g} px "
        "from the frame edges (Picasso does not identify maxima within box/2 + 1 px of the "
        "edges).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for record in records:
        row = [record["condition"]]
        for m in methods:
            entry = record["methods"].get(m, {})
            row.append(_fmt(entry.get("frames_per_s")) if "error" not in entry else "fail")
        row += [_metric(record, m, "interior_tol250", "jaccard") for m in methods]
        thresholds = [
            f"{record['methods'][m]['min_net_gradient']:.0f}"
            for m in methods
            if "min_net_gradient" in record["methods"].get(m, {})
        ]
        row.append(" / ".join(thresholds) if thresholds else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    failures = [
        f"- {record['condition']} {m}: {entry['error']}"
        for record in records
        for m, entry in record["methods"].items()
        if "error" in entry
    ]
    if meta.get("skipped"):
        lines += ["", f"Skipped methods: {meta['skipped']}"]
    if failures:
        lines += ["", "Failures:", *failures]
    return "\n".join(lines) + "\n"


def _plain(value):
    """JSON-ready copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.integer | bool):
        return value if isinstance(value, bool) else int(value)
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def thread_info() -> str:
    parts = [
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}",
    ]
    if "torch" in sys.modules:
        parts.append(f"torch threads={sys.modules['torch'].get_num_threads()}")
    parts.append("Picasso serial (threaded=False)")
    return ", ".join(parts)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames per condition (default 200, or 20 with --quick)",
    )
    parser.add_argument("--size", type=int, default=64, help="frame size in pixels (square)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output path; .json and .md are written next to each other "
        f"(default {DEFAULT_OUT}[_quick].json/.md)",
    )
    parser.add_argument("--quick", action="store_true", help="20 frames per condition")
    parser.add_argument(
        "--methods", default="ours,picasso", help=f"comma-separated, from {', '.join(METHODS)}"
    )
    parser.add_argument(
        "--suite", choices=("release", "microscopes"), default="release",
        help="release: the first release's test sets (100 nm, 1000-5000 photons, no blinking); "
        "microscopes: the corners of the training ranges with realistic blinking",
    )
    parser.add_argument("--cameras", default=",".join(CAMERAS))
    parser.add_argument("--densities", default=None,
                        help="comma-separated (default: 0.3,1,3,6 for release, 0.3,1,3 for "
                        "microscopes)")
    parser.add_argument(
        "--no-uniform", action="store_true", help="skip the uniform test set at the lowest density"
    )
    parser.add_argument("--box", type=int, default=7, help="Picasso box size (odd)")
    parser.add_argument(
        "--border-px",
        type=float,
        default=4.0,
        help="border excluded from the 'interior' Jaccard, pixels",
    )
    parser.add_argument("--device", default="cpu", help="device of our method")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size of our method")
    parser.add_argument(
        "--weights",
        default=None,
        help="our model: shipped name or .safetensors with its .json card",
    )
    args = parser.parse_args(argv)
    if args.frames is None:
        args.frames = 20 if args.quick else 200
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    if args.box < 3 or args.box % 2 == 0:
        parser.error("--box must be an odd integer >= 3")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or not args.methods:
        parser.error(f"unknown --methods {unknown}; choose from {METHODS}")
    args.cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    default = DENSITIES if args.suite == "release" else MICROSCOPE_DENSITIES
    args.densities = ([float(d) for d in args.densities.split(",") if d.strip()]
                      if args.densities else list(default))
    if args.out is None:
        args.out = DEFAULT_OUT.with_name(DEFAULT_OUT.name + ("_quick" if args.quick else ""))
    if args.out.suffix in (".json", ".md"):
        args.out = args.out.with_suffix("")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = (
        " ".join([Path(sys.executable).as_posix(), *sys.argv])
        if argv is None
        else ("bench_kde.main(" + repr(argv) + ")")
    )
    methods: dict[str, Localizer | None] = {}
    skipped = {}
    for name in args.methods:
        if name.startswith("ours"):
            try:
                weights = {"ours-v1": KDE_CNN_V1_NAME, "ours-fast": KDE_CNN_FAST_NAME}.get(
                    name, args.weights)
                methods[name] = make_ours(args.device, args.batch_size, weights,
                                          refine=name == "ours-fit",
                                          single_threshold=name == "ours-single")
            except Exception as error:  # noqa: BLE001 - missing pipeline or weights
                if all(m.startswith("ours") for m in args.methods):
                    raise
                skipped[name] = f"{type(error).__name__}: {error}"
                print(
                    f"our method is not available ({skipped[name]}); running without it", flush=True
                )
        else:
            if picasso_baseline.picasso_version() == "not installed":
                if len(args.methods) == 1:
                    raise SystemExit("picassosr is not installed in this environment")
                skipped[name] = "picassosr not installed"
                print("Picasso is not installed; running without it", flush=True)
                continue
            methods[name] = None
    if not methods:
        raise SystemExit("no method to run")
    meta = {
        "command": command,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "picasso_version": picasso_baseline.picasso_version(),
        "frames_per_condition": args.frames,
        "frame_size_px": args.size,
        "pixel_size_nm": PIXEL_SIZE_NM,
        "photons": list(PHOTONS),
        "background": BACKGROUND,
        "psf_sigma_px": PSF_SIGMA_PX,
        "seed_base": SEED_BASE,
        "box": args.box,
        "border_px": args.border_px,
        "tolerances_nm": list(TOLERANCES_NM),
        "skipped": skipped,
    }
    records = []
    start = time.perf_counter()
    suite = (conditions(args.cameras, args.densities, not args.no_uniform)
             if args.suite == "release" else microscope_conditions(args.densities))
    meta["suite"] = args.suite
    for condition in suite:
        print(f"{condition.name} (seed {condition.seed})", flush=True)
        records.append(run_condition(condition, methods, args))
    meta["threads"] = thread_info()
    meta["total_s"] = time.perf_counter() - start
    results = {"meta": meta, "methods": list(methods), "conditions": records}
    report = markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    json_path.write_text(json.dumps(_plain(results), indent=1, allow_nan=False))
    md_path.write_text(report)
    print()
    print(report)
    print(f"wrote {json_path} and {md_path} ({meta['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
