"""How precisely can any method find an EMCCD's baseline from the background of a stack?

For the EMCCD conditions of ``bench_inspection.py`` this computes the Cramer-Rao bound on the
baseline from the background values the inspection uses (those :func:`background_residuals`
keeps), and prints it next to what ``inspect`` reports on the same stacks.

An EM register turns ``n`` photo-electrons into Gamma(n, g) electrons, so a background pixel with
mean ``lam`` photo-electrons reads ``baseline + G + e`` ADU: ``G`` is 0 with probability
``exp(-lam)`` and otherwise has the density ``exp(-lam - x/a) sqrt(lam / (a x)) I1(2 sqrt(lam x /
a))`` (``a`` ADU per photo-electron), ``e`` is Gaussian read noise (given). The bound is the
inverse Fisher information of (baseline, a) with each frame's ``lam`` unknown (the frame's mean
level is a nuisance parameter, as it is for the inspection). No unbiased method can be more
precise on these values; the bound falls as one over the square root of their number.

    python benchmarks/bench_emccd_baseline_bound.py [--seeds 3] [--frames 300] [--size 64]
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_inspection import CONDITIONS
from scipy import signal, special

from napari_smlm_diffusion.inspection import inspect_stack
from napari_smlm_diffusion.inspection.photon_transfer import background_residuals
from napari_smlm_diffusion.inspection.report import _usable_frames, read_sample, sample_indices
from napari_smlm_diffusion.inspection.spots import detect
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_frames

GRID_SD = 8.0


def em_register_pdf(offsets: np.ndarray, lam: float, gain: float, read_sd: float) -> np.ndarray:
    """Density of ``G + e`` on an evenly spaced grid of ADU above the baseline."""
    step = float(offsets[1] - offsets[0])
    x = offsets[offsets > 0]
    z = 2.0 * np.sqrt(lam * x / gain)
    mass = np.zeros_like(offsets)
    mass[offsets > 0] = (np.exp(-lam - x / gain + z) * np.sqrt(lam / (gain * x))
                         * special.ive(1, z) * step)
    mass[np.argmin(np.abs(offsets))] += np.exp(-lam)
    half = int(np.ceil(GRID_SD * read_sd / step))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * step / read_sd) ** 2)
    return signal.fftconvolve(mass, kernel / kernel.sum(), mode="same") / step


def fisher_per_value(lam: float, gain: float, read_sd: float, step: float = 0.5) -> np.ndarray:
    """Fisher information of one background value for (baseline, gain, lam)."""
    grid = np.arange(-GRID_SD * read_sd - 10 * step,
                     gain * (lam + 14 * np.sqrt(2 * lam + 1)) + GRID_SD * read_sd, step)

    def density(baseline: float, a: float, n: float) -> np.ndarray:
        return np.interp(grid - baseline, grid, em_register_pdf(grid, n, a, read_sd), 0.0, 0.0)

    theta = np.array([0.0, gain, lam])
    h = np.array([0.25, gain * 1e-3, lam * 1e-3])
    p0 = density(*theta)
    grads = []
    for i in range(3):
        up, down = theta.copy(), theta.copy()
        up[i] += h[i]
        down[i] -= h[i]
        grads.append((density(*up) - density(*down)) / (2 * h[i]))
    ok = p0 > 1e-12 * p0.max()
    return np.array([[np.sum(g[ok] * k[ok] / p0[ok]) * step for k in grads] for g in grads])


def baseline_bound(lams: np.ndarray, counts: np.ndarray, gain: float, read_sd: float) -> float:
    """Cramer-Rao bound (ADU) on the baseline from ``counts[f]`` values at ``lams[f]``
    photo-electrons in frame ``f``, each frame's ``lam`` unknown."""
    information = np.zeros((2, 2))
    for lam, count in zip(lams, counts, strict=True):
        info = fisher_per_value(float(lam), gain, read_sd) * count
        information += info[:2, :2] - np.outer(info[:2, 2], info[2, :2]) / info[2, 2]
    return float(np.sqrt(np.linalg.inv(information)[0, 0]))


def background_counts(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frames the inspection reads (it has a pixel budget) and the number of background
    values its photon transfer uses in each."""
    raw, notes = read_sample(frames, frames.shape[0])
    usable_frames, saturated = _usable_frames(raw, notes)
    det = detect(usable_frames, saturated)
    frame_index = background_residuals(usable_frames, ~det.signal_mask)[0]
    return (sample_indices(frames.shape[0], raw.shape[0]),
            np.bincount(frame_index, minlength=raw.shape[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    print(f"{args.frames} frames of {args.size}x{args.size}, density 0.3/um2, seeds "
          f"0..{args.seeds - 1}: inspect's baseline mean (sd over seeds) [mean reported se]; "
          "Cramer-Rao bound on the same values")
    for name, values in CONDITIONS.items():
        if "EMCCD" not in name:
            continue
        config = SimulationConfig(size=(args.size, args.size), density=0.3,
                                  photons=(1000.0, 5000.0), **values)
        cam = config.camera
        gain, read_sd = cam.em_gain / cam.sensitivity, cam.read_noise / cam.sensitivity
        estimates, ses, bounds = [], [], []
        for seed in range(args.seeds):
            simulated = list(simulate_frames(args.frames, config, seed=seed, with_kde=False))
            frames = np.stack([f.adu for f in simulated])
            report = inspect_stack(frames, cam, n_frames=args.frames)
            estimates.append(report.baseline_adu)
            ses.append(report.baseline_adu_uncertainty)
            read, counts = background_counts(frames)
            lams = np.array([simulated[i].background for i in read]) * cam.quantum_efficiency
            bounds.append((baseline_bound(lams, counts, gain, float(np.sqrt(read_sd**2 + 1 / 12))),
                           counts.sum()))
        bound, n_values = np.mean(bounds, axis=0)
        print(f"{name}: truth {cam.baseline:g} ADU; inspect {np.mean(estimates):.1f} "
              f"({np.std(estimates):.1f}) [{np.mean(ses):.1f}]; bound {bound:.1f} ADU from "
              f"{n_values:.0f} background values", flush=True)


if __name__ == "__main__":
    main()
