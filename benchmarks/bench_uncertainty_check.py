"""Label-free uncertainty check on simulated blinking movies, against the ground truth.

Molecules at fixed positions switch on at random frames and stay on for a geometric number of
frames (mean 3; the first and last frame of a run get a random fraction of the photons), as in
real (d)STORM movies. The shipped KDE CNN localizes each movie (default localization: KDE
peaks, photometry, bounded CRLB); then, per density:

* ground truth: RMS(error / reported uncertainty) per axis (1 when calibrated) and the Spearman
  correlation of the reported uncertainty with |error| (matched within 250 nm);
* label-free: :func:`napari_smlm_diffusion.uncertainty_check.check_uncertainty` (robust spread and
  RMS of displacement / predicted between consecutive frames, Spearman, pairs).

With ``--posterior-frames N`` the diffusion posterior (shipped pair, default settings) also runs
on the first N frames of each movie and its table gets the same two checks.

With ``--psf airy`` the movies are drawn with the diffraction pattern of a circular pupil (an
Airy disc, 5 x 5 samples per pixel) instead of the Gaussian the models were trained on, and the
pipeline is told the Gaussian-equivalent sigma (0.21 wavelength / NA), as a user would: the
model mismatch every real microscope has.

    python benchmarks/bench_uncertainty_check.py [--frames 300] [--posterior-frames 48]
        [--psf gaussian|airy] [--out benchmarks/results/uncertainty_check.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import j1
from scipy.stats import spearmanr

from napari_smlm_diffusion.camera import Camera, preset
from napari_smlm_diffusion.metrics import match_localizations
from napari_smlm_diffusion.pipeline import KdeEngine, run_kde
from napari_smlm_diffusion.psf import expected_image
from napari_smlm_diffusion.simulate import apply_camera_noise
from napari_smlm_diffusion.uncertainty_check import MAD_TO_SIGMA, check_uncertainty, describe

SIZE = 64
PSF_SIGMA_PX = 1.2
BACKGROUND = 50.0
MEAN_ON_FRAMES = 3.0
AIRY_SIGMA_PER_WAVELENGTH_NA = 0.21  # Gaussian-equivalent sigma of an Airy disc
AIRY_SAMPLES = 5
AIRY_HALF_WINDOW_PX = 12


def airy_image(shape: tuple[int, int], x_px: np.ndarray, y_px: np.ndarray,
               photons: np.ndarray, sigma_px: float, background: float) -> np.ndarray:
    """Expected photons per pixel of emitters with an Airy-disc PSF whose Gaussian-equivalent
    sigma is ``sigma_px`` (wavelength / NA = sigma / 0.21), on a flat ``background``; pixels
    integrated by 5 x 5 samples, each emitter drawn within +-``AIRY_HALF_WINDOW_PX`` (the light
    beyond, about 4 %, is lost in the background as a real camera's far rings are)."""
    k = 2 * np.pi * AIRY_SIGMA_PER_WAVELENGTH_NA / sigma_px  # 2 pi NA / wavelength, per px
    sub = (np.arange(AIRY_SAMPLES) + 0.5) / AIRY_SAMPLES
    image = np.full(shape, float(background))
    for x, y, n in zip(x_px, y_px, photons, strict=True):
        c0, r0 = int(np.floor(x)) - AIRY_HALF_WINDOW_PX, int(np.floor(y)) - AIRY_HALF_WINDOW_PX
        cols = c0 + np.arange(2 * AIRY_HALF_WINDOW_PX + 1)
        rows = r0 + np.arange(2 * AIRY_HALF_WINDOW_PX + 1)
        sx = (cols[:, None] + sub[None, :]).ravel() - x
        sy = (rows[:, None] + sub[None, :]).ravel() - y
        v = k * np.hypot(sx[None, :], sy[:, None]) + 1e-12
        density = k**2 / (4 * np.pi) * (2 * j1(v) / v) ** 2 / AIRY_SAMPLES**2
        pixels = density.reshape(len(rows), AIRY_SAMPLES, len(cols), AIRY_SAMPLES).sum((1, 3))
        inside_r = (rows >= 0) & (rows < shape[0])
        inside_c = (cols >= 0) & (cols < shape[1])
        image[np.ix_(rows[inside_r], cols[inside_c])] += n * pixels[np.ix_(inside_r, inside_c)]
    return image


def blinking_movie(n_frames: int, density: float, camera: Camera, seed: int,
                   psf: str = "gaussian") -> tuple[np.ndarray, pd.DataFrame]:
    """ADU frames and truth (frame, x_nm, y_nm, photons) with ``density`` molecules on per
    um^2 and frame on average; ``psf`` "gaussian" or "airy" (:func:`airy_image`)."""
    draw = expected_image if psf == "gaussian" else airy_image
    rng = np.random.default_rng(seed)
    pixel = camera.pixel_size
    area_um2 = (SIZE * pixel / 1000.0) ** 2
    n_runs = rng.poisson(density * area_um2 * n_frames / MEAN_ON_FRAMES)
    x, y = rng.uniform(0, SIZE * pixel, (2, n_runs))
    brightness = np.exp(rng.uniform(np.log(500.0), np.log(5000.0), n_runs))
    start = rng.integers(-3, n_frames, n_runs)
    length = rng.geometric(1.0 / MEAN_ON_FRAMES, n_runs)
    rows = []
    for i in range(n_runs):
        frames = np.arange(start[i], start[i] + length[i])
        fraction = np.ones(len(frames))
        fraction[0] = rng.uniform(0.2, 1.0)
        if len(frames) > 1:
            fraction[-1] = rng.uniform(0.2, 1.0)
        inside = (frames >= 0) & (frames < n_frames)
        for frame, f in zip(frames[inside], fraction[inside], strict=True):
            rows.append((frame, x[i], y[i], brightness[i] * f))
    truth = pd.DataFrame(rows, columns=["frame", "x_nm", "y_nm", "photons"]).astype(
        {"frame": np.int64}).sort_values("frame", kind="stable").reset_index(drop=True)
    movie = np.empty((n_frames, SIZE, SIZE), dtype=np.uint16)
    for frame in range(n_frames):
        on = truth[truth.frame == frame]
        expected = draw((SIZE, SIZE), on.x_nm.to_numpy() / pixel, on.y_nm.to_numpy() / pixel,
                        on.photons.to_numpy(), PSF_SIGMA_PX, BACKGROUND)
        movie[frame] = apply_camera_noise(expected, camera, rng)
    return movie, truth


def ground_truth_calibration(truth: pd.DataFrame, locs: pd.DataFrame) -> dict:
    """RMS(error / uncertainty) per axis, its robust spread (1.4826 MAD, both axes, as the
    label-free check computes it) and Spearman(uncertainty, |error|) over matches."""
    match = match_localizations(truth, locs, 250.0)
    matched = locs.iloc[match.loc_index]
    dx, dy = match.dx, match.dy
    sx, sy = matched.uncertainty_x_nm.to_numpy(), matched.uncertainty_y_nm.to_numpy()
    z = np.r_[dx / sx, dy / sy]
    return {"matches": len(dx),
            "robust_z": float(MAD_TO_SIGMA * np.median(np.abs(z - np.median(z)))),
            "rms_z_x": float(np.sqrt(np.mean((dx / sx) ** 2))),
            "rms_z_y": float(np.sqrt(np.mean((dy / sy) ** 2))),
            "spearman": float(spearmanr(np.hypot(sx, sy), np.hypot(dx, dy)).statistic)}


def posterior_table(movie: np.ndarray, camera: Camera, frames: int) -> pd.DataFrame:
    """The posterior's localizations (shipped pair, default settings) of the first frames."""
    from napari_smlm_diffusion.posterior import PosteriorEngine, iter_posterior
    from napari_smlm_diffusion.posterior_settings import DEFAULT_POSTERIOR

    engine = PosteriorEngine.load(device="cpu")
    batches = iter_posterior(movie, camera, engine, range(frames), DEFAULT_POSTERIOR,
                             PSF_SIGMA_PX * camera.pixel_size)
    return pd.concat([b.localizations for b in batches], ignore_index=True)


def table_row(label: str, truth: pd.DataFrame, locs: pd.DataFrame) -> tuple[dict, str]:
    """Both checks of one table, as a record and a markdown row."""
    gt = ground_truth_calibration(truth, locs)
    check = check_uncertainty(locs)
    record = {"ground_truth": gt, "check": check.to_dict(), "reading": describe(check),
              "unresolved_fraction": float(1 - locs.resolved.mean())}
    row = (f"| {label} | {len(locs)} | {gt['rms_z_x']:.2f} / {gt['rms_z_y']:.2f} | "
           f"{gt['robust_z']:.2f} | {gt['spearman']:.2f} | {check.spread:.2f} | "
           f"{check.rms_spread:.2f} | {check.spearman:.2f} | {check.pairs} | "
           f"{record['unresolved_fraction']:.3f} |")
    print(row, "|", describe(check), flush=True)
    return record, row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.3, 1.0, 3.4])
    parser.add_argument("--posterior-frames", type=int, default=0,
                        help="also run the posterior on this many first frames of each movie")
    parser.add_argument("--psf", choices=("gaussian", "airy"), default="gaussian")
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/uncertainty_check.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    camera = preset("sCMOS")
    engine = KdeEngine.load(device="cpu")
    results, rows = {}, []
    for k, density in enumerate(args.densities):
        movie, truth = blinking_movie(args.frames, density, camera, 1400 + k, args.psf)
        locs = run_kde(movie, camera, engine, psf_sigma_nm=PSF_SIGMA_PX * camera.pixel_size
                       ).localizations
        results[density], row = table_row(f"{density:g}", truth, locs)
        rows.append(row)
        if args.posterior_frames:
            frames = min(args.posterior_frames, args.frames)
            posterior = posterior_table(movie, camera, frames)
            results[f"{density:g} posterior"], row = table_row(
                f"{density:g}, posterior ({frames} frames)", truth[truth.frame < frames],
                posterior)
            rows.append(row)
    psf_text = (" (Gaussian-equivalent of the Airy disc the frames are drawn with)"
                if args.psf == "airy" else "")
    posterior_text = (" Rows marked posterior: the diffusion posterior (shipped pair, default "
                      "settings) on the first frames of the same movie."
                      if args.posterior_frames else "")
    text = (
        "# Label-free uncertainty check on simulated blinking movies\n\n"
        f"{args.frames} frames of {SIZE}x{SIZE} sCMOS pixels (100 nm), PSF sigma "
        f"{PSF_SIGMA_PX} px{psf_text}, 500-5000 photons, background {BACKGROUND:g}, on-times "
        f"geometric (mean {MEAN_ON_FRAMES:g} frames); default localization (bounded CRLB); "
        f"check radius 200 nm.{posterior_text}\n\n"
        "| molecules/um^2 | localizations | RMS z x / y (truth) | robust z (truth) "
        "| Spearman (truth) | spread (label-free) | RMS (label-free) | Spearman (label-free) "
        "| pairs | unresolved |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(text)


if __name__ == "__main__":
    main()
