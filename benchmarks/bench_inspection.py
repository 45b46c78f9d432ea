"""Accuracy and time of ``inspect`` on simulated stacks: estimate vs truth per condition.

Every condition is simulated with several seeds (low density, background drawn per frame from
a range); the table gives the mean estimate, the spread over seeds and the mean reported
standard error next to the truth.

    python benchmarks/bench_inspection.py [--seeds 3] [--frames 300] [--size 64] [--only EMCCD]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_smlm_diffusion.camera import PRESETS, Camera
from napari_smlm_diffusion.inspection import inspect_stack
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_frames

CUSTOM_SCMOS = Camera(baseline=400.0, sensitivity=0.25, em_gain=1.0, quantum_efficiency=0.9,
                      read_noise=2.5, pixel_size=65.0)
EMCCD_300 = Camera(baseline=200.0, sensitivity=12.0, em_gain=300.0, quantum_efficiency=0.95,
                   read_noise=60.0, pixel_size=130.0)
CONDITIONS = {
    "sCMOS bg 20-200, sigma 1.2 px": dict(camera=PRESETS["sCMOS"], background=(20.0, 200.0)),
    "sCMOS bg 20-60, sigma 1.2 px": dict(camera=PRESETS["sCMOS"], background=(20.0, 60.0)),
    "sCMOS bg 20-200, sigma 0.9 px": dict(camera=PRESETS["sCMOS"], background=(20.0, 200.0),
                                          psf_sigma_px=0.9),
    "sCMOS 65 nm, 0.25 e-/ADU, bg 20-100, sigma 1.8 px": dict(
        camera=CUSTOM_SCMOS, background=(20.0, 100.0), psf_sigma_px=1.8),
    "sCMOS flat bg 50, sigma 1.2 px": dict(camera=PRESETS["sCMOS"], background=50.0),
    "sCMOS dim bg 2-20, sigma 1.2 px": dict(camera=PRESETS["sCMOS"], background=(2.0, 20.0)),
    "sCMOS pixel pattern (offsets sd 3 ADU, read noise sd 0.5 in log), bg 20-200": dict(
        camera=PRESETS["sCMOS"], background=(20.0, 200.0), offset_spread_adu=3.0,
        read_noise_spread=0.5),
    "sCMOS pixel pattern (offsets sd 3 ADU, read noise sd 0.5 in log), bg 2-20": dict(
        camera=PRESETS["sCMOS"], background=(2.0, 20.0), offset_spread_adu=3.0,
        read_noise_spread=0.5),
    "EMCCD bg 20-200, sigma 1.2 px": dict(camera=PRESETS["EMCCD"], background=(20.0, 200.0)),
    "EMCCD flat bg 50, sigma 1.2 px": dict(camera=PRESETS["EMCCD"], background=50.0),
    "EMCCD dim bg 2-20, sigma 1.2 px": dict(camera=PRESETS["EMCCD"], background=(2.0, 20.0)),
    "EMCCD dim flat bg 10, sigma 1.2 px": dict(camera=PRESETS["EMCCD"], background=10.0),
    "EMCCD gain 300, 12 e-/ADU, bg 20-100, sigma 1.0 px": dict(
        camera=EMCCD_300, background=(20.0, 100.0), psf_sigma_px=1.0),
}
KEYS = (("baseline_adu", "baseline [ADU]"), ("sensitivity_e_per_adu", "sensitivity [e-/ADU]"),
        ("read_noise_e", "read noise [e-]"), ("psf_sigma_nm", "PSF sigma [nm]"),
        ("background_median_photons", "background median [photons]"),
        ("photons_median", "photons median"), ("density_per_um2", "density [/um2]"))


def simulate(n_frames: int, config: SimulationConfig, seed: int) -> tuple[np.ndarray, dict]:
    """Frames (ADU) and the true values of the reported quantities (photons: median over all
    emitters; background: median of the per-frame backgrounds)."""
    frames = list(simulate_frames(n_frames, config, seed=seed, with_kde=False))
    cam = config.camera
    rows, cols = config.size
    photons = np.concatenate([f.truth["photons"].to_numpy() for f in frames])
    true = {
        "baseline_adu": cam.baseline, "sensitivity_e_per_adu": cam.sensitivity,
        "read_noise_e": cam.read_noise, "psf_sigma_nm": config.psf_sigma_px * cam.pixel_size,
        "background_median_photons": float(np.median([f.background for f in frames])),
        "photons_median": float(np.median(photons)),
        "density_per_um2": len(photons) / n_frames / (rows * cols * (cam.pixel_size * 1e-3) ** 2),
    }
    return np.stack([f.adu for f in frames]), true


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--density", type=float, default=0.3)
    parser.add_argument("--only", default="", help="run the conditions whose name contains this")
    args = parser.parse_args()
    print(f"{args.frames} frames of {args.size}x{args.size}, density {args.density}/um2, "
          f"photons 1000-5000, seeds 0..{args.seeds - 1}; mean (sd over seeds) [mean se] truth")
    for name, values in CONDITIONS.items():
        if args.only not in name:
            continue
        config = SimulationConfig(size=(args.size, args.size), density=args.density,
                                  photons=(1000.0, 5000.0), **values)
        rows, seconds = {key: [] for key, _ in KEYS}, []
        for seed in range(args.seeds):
            frames, true = simulate(args.frames, config, seed)
            start = time.perf_counter()
            report = inspect_stack(frames, config.camera, n_frames=args.frames)
            seconds.append(time.perf_counter() - start)
            for key, _ in KEYS:
                rows[key].append((*report.estimate(key), true[key]))
        print(f"\n{name} ({np.mean(seconds):.1f} s per inspection)")
        for key, label in KEYS:
            est, se, true = np.array(rows[key]).T
            error = (f"error {100 * (est.mean() / true.mean() - 1):+.1f} %"
                     if np.all(np.isfinite(se)) else "not measured in every seed: the given value")
            print(f"  {label:30s} {est.mean():9.4g} ({est.std():.2g}) [{se.mean():.2g}]  "
                  f"truth {true.mean():.4g}  {error}")


if __name__ == "__main__":
    main()
