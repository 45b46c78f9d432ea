"""Diffusion posterior on simulated data: localization, calibration and speed.

For each test set (filaments, sCMOS, densities 0.3, 1 and 3 per um^2, seeds from 700000, never
used in training) and each sampler setting it reports:

- localization from the posterior mean vs from the CNN estimate y_hat (Jaccard, RMSE, 250 nm);
- per-localization calibration: RMS of (error / reported sigma) per axis over matches;
- per-pixel calibration of the std map against the true KDE: ZMS = mean((y - mean)^2 / var) over
  pixels where the true KDE or the mean exceeds 0.05, and the binned RMSE vs predicted std;
- seconds per frame.

    python benchmarks/bench_posterior.py [--frames 8] [--samples 8] [--out results/posterior]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.metrics import evaluate
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings, iter_posterior
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack
from napari_smlm_diffusion.train import localize_kdes

DENSITIES = (0.3, 1.0, 3.0)
SEED = 700_000
SETTINGS = {"dpm-solver-20": ("dpm-solver", 20), "ddpm-100": ("ddpm", 100)}


def pixel_calibration(truth: np.ndarray, mean: np.ndarray, var: np.ndarray) -> dict:
    """ZMS and binned RMSE-vs-std over the pixels that carry signal."""
    mask = (truth > 0.05) | (mean > 0.05)
    error2 = (truth - mean)[mask] ** 2
    variance = np.maximum(var[mask], 1e-8)
    std = np.sqrt(variance)
    edges = np.quantile(std, np.linspace(0, 1, 11))
    bins = np.clip(np.digitize(std, edges[1:-1]), 0, 9)
    curve = [(float(std[bins == b].mean()), float(np.sqrt(error2[bins == b].mean())))
             for b in range(10) if np.any(bins == b)]
    return {"zms": float(np.mean(error2 / variance)), "pixels": int(mask.sum()),
            "curve_std_vs_rmse": curve}


def run(args) -> dict:
    camera = preset("sCMOS")
    engine = PosteriorEngine.load(device="cpu")
    threshold = float(engine.card["detection_threshold"])
    fine = camera.pixel_size / engine.kde.upsampling
    results = {"denoiser_sha256": engine.card["sha256"], "conditions": []}
    for k, density in enumerate(DENSITIES):
        config = SimulationConfig(size=(args.size, args.size), density=density, camera=camera,
                                  layout="filaments")
        stack = simulate_stack(args.frames, config, seed=SEED + k, with_kde=True)
        y_hat = engine.kde.predict(stack.frames, camera)
        cnn = evaluate(stack.truth, localize_kdes(y_hat, fine, threshold))
        row = {"density": density, "cnn": {m: cnn[m] for m in ("jaccard", "rmse_lateral_nm")}}
        for name, (sampler, steps) in SETTINGS.items():
            settings = PosteriorSettings(samples=args.samples, steps=steps, sampler=sampler)
            start = time.perf_counter()
            batches = list(iter_posterior(stack.frames, camera, engine, range(args.frames),
                                          settings, psf_sigma_nm=120.0))
            seconds = (time.perf_counter() - start) / args.frames
            means = np.stack([b.frames[0].mean for b in batches])
            variances = np.stack([b.frames[0].variance for b in batches])
            table = pd.concat([b.localizations for b in batches], ignore_index=True)
            mean_locs = evaluate(stack.truth, localize_kdes(means, fine, threshold))
            with_sigma = evaluate(stack.truth, table)
            row[name] = {
                "seconds_per_frame": seconds,
                "nfe_per_sample": steps,
                "posterior_mean": {m: mean_locs[m] for m in ("jaccard", "rmse_lateral_nm")},
                "calibration_x": with_sigma.get("calibration_x"),
                "calibration_y": with_sigma.get("calibration_y"),
                "pixels": pixel_calibration(stack.kdes, means, variances),
            }
            print(json.dumps({"density": density, name: {
                "s/frame": round(seconds, 2), "J mean": round(mean_locs["jaccard"], 1),
                "J cnn": round(cnn["jaccard"], 1), "ZMS": round(row[name]["pixels"]["zms"], 2),
                "cal": [row[name]["calibration_x"], row[name]["calibration_y"]]}}), flush=True)
        results["conditions"].append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/posterior.json"))
    args = parser.parse_args()
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
