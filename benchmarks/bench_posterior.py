"""Diffusion posterior on simulated data: localization, calibration and speed.

Test sets: filaments, sCMOS, 64x64 frames of 100 nm pixels, densities 0.3, 1 and 3 per um^2,
seeds from 700000 (never used in training or calibration). For each sampler setting:

- localization from the posterior mean vs from the CNN estimate y_hat (Jaccard, RMSE, 250 nm);
- per-localization calibration: RMS of (error / reported sigma) per axis over matches;
- per-pixel calibration of the std map against the true KDE, over the pixels where the true KDE
  or the mean exceeds 0.05: ZMS = mean((y - mean)^2 / var), the pooled ratio
  mean((y - mean)^2) / mean(var), the binned RMSE vs predicted std (plotted to PNG when
  matplotlib is installed) and AUSE (area between the sparsification curve ordered by predicted
  std and the oracle ordered by the true error, relative to the RMSE). With N samples a
  calibrated Gaussian posterior gives a pooled ratio of 1 + 1/N (the mean's own Monte-Carlo
  error) and a ZMS of (1 + 1/N)(N - 1)/(N - 3) (the noise of the variance estimate): 1.13 and
  1.58 for N = 8;
- seconds per frame, network evaluations per sample.

``--calibrate`` instead chooses how the per-localization uncertainty is reported (posterior
spread alone or with the information-matrix precision in quadrature) and its recalibration
factor, on separate validation seeds (800000+) for the first setting (see :func:`calibrate`);
store them with ``scripts/export_weights.py ... --calibration JSON``.

    python benchmarks/bench_posterior.py [--frames 8] [--samples 8] [--out DIR]
    python benchmarks/bench_posterior.py --calibrate --frames 16
    python benchmarks/bench_posterior.py --speed
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.metrics import (
    evaluate,
    match_localizations,
    uncertainty_calibration,
)
from napari_smlm_diffusion.posterior import (
    PosteriorEngine,
    PosteriorSettings,
    iter_posterior,
    localize_posterior,
)
from napari_smlm_diffusion.recalibration import (
    calibrated_pixel_variance,
    calibrated_sigma,
    fit_pixel_calibration,
    fit_uncertainty_model,
    local_signal,
)
from napari_smlm_diffusion.simulate import SimulatedStack, SimulationConfig, simulate_stack
from napari_smlm_diffusion.train import THRESHOLDS, localize_kdes
from napari_smlm_diffusion.weights import DENOISER_NAME

DENSITIES = (0.3, 1.0, 3.0)
TEST_SEED = 700_000
CALIBRATION_SEED = 800_000
PSF_SIGMA_NM = 120.0
FRAMES_PER_STRUCTURE = 4


def parse_setting(text: str) -> tuple[str, int]:
    """'dpm-solver:20' -> ('dpm-solver', 20)."""
    sampler, steps = text.split(":")
    return sampler, int(steps)


def sparsification_ause(error2: np.ndarray, std: np.ndarray, points: int = 20) -> float:
    """Area between the RMSE-after-removal curves ordered by predicted std and by the true error,
    relative to the RMSE of all pixels (0: the std ranks errors perfectly)."""
    fractions = np.linspace(0.0, 0.95, points)

    def curve(order: np.ndarray) -> np.ndarray:
        ranked = error2[order]
        return np.array([np.sqrt(ranked[int(f * len(ranked)):].mean()) for f in fractions])

    by_std = curve(np.argsort(-std, kind="stable"))
    oracle = curve(np.argsort(-error2, kind="stable"))
    return float(np.mean(by_std - oracle) / np.sqrt(error2.mean()))


def signal_pixels(truth: np.ndarray, mean: np.ndarray, variance: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Squared error of the mean and variance over the pixels that carry signal (true KDE or
    mean above 0.05)."""
    mask = signal_mask(truth, mean)
    return (truth - mean)[mask].astype(np.float64) ** 2, variance[mask].astype(np.float64)


def signal_mask(truth: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The pixels that carry signal: true KDE or posterior mean above 0.05."""
    return (truth > 0.05) | (mean > 0.05)


def zms(error2: np.ndarray, variance: np.ndarray) -> float:
    """mean(error^2 / variance), variances floored at 1e-8."""
    return float(np.mean(error2 / np.maximum(variance, 1e-8)))


def pixel_calibration(truth: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> dict:
    """ZMS, AUSE and binned RMSE-vs-std over the pixels that carry signal."""
    error2, variance = signal_pixels(truth, mean, variance)
    std = np.sqrt(np.maximum(variance, 1e-8))
    edges = np.quantile(std, np.linspace(0, 1, 11))
    bins = np.clip(np.digitize(std, edges[1:-1]), 0, 9)
    curve = [(float(std[bins == b].mean()), float(np.sqrt(error2[bins == b].mean())))
             for b in range(10) if np.any(bins == b)]
    return {"zms": zms(error2, variance),
            "pooled_ratio": float(error2.mean() / variance.mean()),
            "ause": sparsification_ause(error2, std),
            "pixels": int(error2.size), "curve_std_vs_rmse": curve}


def test_stack(density: float, frames: int, size: int, seed: int) -> SimulatedStack:
    """A simulated filament stack (sCMOS, 100 nm pixels) with true KDEs: a new filament
    structure every FRAMES_PER_STRUCTURE frames (seeded from (seed, part)), so that a set
    samples many structures rather than one."""
    config = SimulationConfig(size=(size, size), density=density, camera=preset("sCMOS"),
                              layout="filaments")
    parts = []
    for part, start in enumerate(range(0, frames, FRAMES_PER_STRUCTURE)):
        part_seed = int(np.random.SeedSequence([seed, part]).generate_state(1)[0])
        stack = simulate_stack(min(FRAMES_PER_STRUCTURE, frames - start), config,
                               seed=part_seed, with_kde=True)
        parts.append((stack, stack.truth.assign(frame=stack.truth.frame + start)))
    return SimulatedStack(
        frames=np.concatenate([stack.frames for stack, _ in parts]),
        truth=pd.concat([truth for _, truth in parts], ignore_index=True),
        kdes=np.concatenate([stack.kdes for stack, _ in parts]), config=config, seed=seed)


def run_setting(engine: PosteriorEngine, stack, settings: PosteriorSettings) -> dict:
    """Posterior of every frame of ``stack``: maps, table and seconds per frame."""
    camera = preset("sCMOS")
    frames = range(len(stack.frames))
    start = time.perf_counter()
    batches = list(iter_posterior(stack.frames, camera, engine, frames, settings,
                                  psf_sigma_nm=PSF_SIGMA_NM))
    seconds = (time.perf_counter() - start) / len(frames)
    return {"means": np.stack([b.frames[0].mean for b in batches]),
            "variances": np.stack([b.frames[0].reported_variance for b in batches]),
            "sample_variances": np.stack([b.frames[0].variance for b in batches]),
            "table": pd.concat([b.localizations for b in batches], ignore_index=True),
            "seconds": seconds}


def spread_alone_calibration(truth: pd.DataFrame, table: pd.DataFrame) -> list[float]:
    """RMS of error / spread over samples per axis (the uncertainty before recalibration)."""
    match = match_localizations(truth, table, 250.0)
    rows = table.iloc[match.loc_index]
    return list(uncertainty_calibration(match.dx, match.dy, rows.posterior_std_x_nm.to_numpy(),
                                        rows.posterior_std_y_nm.to_numpy()))


def benchmark(args) -> dict:
    camera = preset("sCMOS")
    engine = PosteriorEngine.load(denoiser_weights=args.denoiser_weights, device="cpu")
    threshold = float(engine.card["detection_threshold"])
    fine = camera.pixel_size / engine.kde.upsampling
    results = {"denoiser_sha256": engine.card["sha256"], "samples": args.samples,
               "frames_per_condition": args.frames, "size": args.size, "conditions": []}
    for k, density in enumerate(DENSITIES):
        stack = test_stack(density, args.frames, args.size, TEST_SEED + k)
        y_hat = engine.kde.predict(stack.frames, camera)
        cnn = evaluate(stack.truth, localize_kdes(y_hat, fine, threshold))
        row = {"density": density,
               "cnn": {m: cnn[m] for m in ("jaccard", "rmse_lateral_nm")},
               "cnn_pixel_rmse": float(np.sqrt(np.mean((y_hat - stack.kdes) ** 2)))}
        for text in args.settings:
            sampler, steps = parse_setting(text)
            settings = PosteriorSettings(samples=args.samples, steps=steps, sampler=sampler)
            out = run_setting(engine, stack, settings)
            scored = evaluate(stack.truth, out["table"])
            uncertain = out["table"]["uncertainty_nm"].to_numpy()
            row[text] = {
                "seconds_per_frame": out["seconds"],
                "nfe_per_sample": steps,
                "posterior_mean": {m: scored[m] for m in ("jaccard", "rmse_lateral_nm")},
                "pixel_rmse": float(np.sqrt(np.mean((out["means"] - stack.kdes) ** 2))),
                "calibration_x": scored.get("calibration_x"),
                "calibration_y": scored.get("calibration_y"),
                "with_uncertainty": float(np.isfinite(uncertain).mean()) if len(uncertain)
                else float("nan"),
                "calibration_spread_alone": spread_alone_calibration(stack.truth, out["table"]),
                "pixels": pixel_calibration(stack.kdes, out["means"], out["variances"]),
                "pixels_sample_variance": pixel_calibration(stack.kdes, out["means"],
                                                            out["sample_variances"]),
            }
            print(json.dumps({"density": density, text: {
                "s/frame": round(out["seconds"], 2),
                "J mean": round(scored["jaccard"], 1), "J cnn": round(cnn["jaccard"], 1),
                "RMSE mean": round(scored["rmse_lateral_nm"], 1),
                "RMSE cnn": round(cnn["rmse_lateral_nm"], 1),
                "ZMS": round(row[text]["pixels"]["zms"], 2),
                "ZMS sample var": round(row[text]["pixels_sample_variance"]["zms"], 1),
                "MSE/var": round(row[text]["pixels"]["pooled_ratio"], 2),
                "AUSE": round(row[text]["pixels"]["ause"], 3),
                "cal": [scored.get("calibration_x"), scored.get("calibration_y")]}}), flush=True)
        results["conditions"].append(row)
    return results


def calibrate(args) -> dict:
    """Detection threshold and uncertainty recalibration of the posterior, on validation seeds.

    The threshold on the posterior mean is the one with the best mean efficiency (250 nm) over
    the densities (the mean is lower than a sample where samples disagree, so the CNN's
    threshold misses molecules). Then the per-molecule uncertainty model (spread, precision,
    floor, local-density exponent) and the std-map calibration (weight of the sample variance,
    floor) are fitted by maximum likelihood (:mod:`napari_smlm_diffusion.recalibration`), and
    the RMS of error / sigma and the ZMS per density are reported before and after.
    """
    engine = PosteriorEngine.load(denoiser_weights=args.denoiser_weights, device="cpu")
    engine.card = {key: value for key, value in engine.card.items()
                   if key not in ("uncertainty_model", "pixel_variance_calibration")}
    camera = preset("sCMOS")
    fine = camera.pixel_size / engine.kde.upsampling
    sampler, steps = parse_setting(args.settings[0])
    settings = PosteriorSettings(samples=args.samples, steps=steps, sampler=sampler)
    runs = []
    for k, density in enumerate(DENSITIES):
        stack = test_stack(density, args.frames, args.size, CALIBRATION_SEED + k)
        posteriors = [b.frames[0] for b in iter_posterior(
            stack.frames, camera, engine, range(args.frames), settings, PSF_SIGMA_NM)]
        runs.append((stack, posteriors))
    efficiency = {
        float(t): float(np.mean([evaluate(stack.truth, localize_kdes(
            np.stack([p.mean for p in posteriors]), fine, float(t)))["efficiency"]
            for stack, posteriors in runs])) for t in THRESHOLDS}
    threshold = max(efficiency, key=efficiency.get)
    print(json.dumps({"posterior_mean_threshold": threshold,
                      "mean_efficiency": round(efficiency[threshold], 2)}), flush=True)
    molecules = [matched_molecules(stack, posteriors, camera, engine, threshold)
                 for stack, posteriors in runs]
    model = fit_uncertainty_model(*(
        [m[key] for m in molecules] for key in ("error", "spread", "precision", "density")))
    pixels = []
    for stack, posteriors in runs:
        mean = np.stack([p.mean for p in posteriors])
        error2, variance = signal_pixels(stack.kdes, mean,
                                         np.stack([p.variance for p in posteriors]))
        pixels.append((error2, variance, local_signal(mean, fine)[signal_mask(stack.kdes, mean)]))
    pixel_model = fit_pixel_calibration(*zip(*pixels, strict=True))
    fitted = {"uncertainty_model": model, "pixel_variance_calibration": pixel_model}

    def rms_z(uncertainty: dict) -> list[float]:
        values = []
        for m in molecules:
            sigma = calibrated_sigma(uncertainty, m["spread"], m["precision"], m["density"])
            values.append(float(np.sqrt(np.nanmean((m["error"] / sigma) ** 2))))
        return values

    spread_alone, quadrature = {}, {"precision_weight": 1.0}
    report = {
        "setting": args.settings[0], "samples": args.samples, "frames": args.frames,
        "seeds": f"{CALIBRATION_SEED}+", "densities": list(DENSITIES),
        "posterior_mean_threshold": threshold, "mean_efficiency_by_threshold": efficiency,
        **fitted,
        "rms_z": {"spread alone": rms_z(spread_alone), "spread and precision in quadrature":
                  rms_z(quadrature), "fitted model": rms_z(model)},
        "zms": {"sample variance": [zms(e2, v) for e2, v, _ in pixels],
                "fitted calibration": [zms(e2, calibrated_pixel_variance(pixel_model, v, signal))
                                       for e2, v, signal in pixels]},
    }
    print(json.dumps({k: report[k] for k in ("rms_z", "zms")}), flush=True)
    return report


def matched_molecules(stack, posteriors, camera, engine, threshold: float) -> dict:
    """Posterior localizations of a validation set matched to the truth (250 nm): their errors
    and the ingredients of the uncertainty model (both axes concatenated)."""
    table = pd.concat([localize_posterior(p, stack.frames[p.frame], camera, engine,
                                          PSF_SIGMA_NM, threshold) for p in posteriors],
                      ignore_index=True)
    match = match_localizations(stack.truth, table, 250.0)
    rows = table.iloc[match.loc_index].reset_index(drop=True)
    both = lambda column: np.concatenate([rows[f"{column}_x_nm"], rows[f"{column}_y_nm"]])  # noqa: E731
    return {"error": np.concatenate([match.dx, match.dy]), "spread": both("posterior_std"),
            "precision": both("precision"),
            "density": np.tile(rows.local_density_um2.to_numpy(), 2)}


def speed(args) -> dict:
    """Seconds per frame as a function of samples, steps and frame size (DPM-Solver)."""
    torch.set_num_threads(args.threads)
    engine = PosteriorEngine.load(denoiser_weights=args.denoiser_weights, device="cpu")
    rows = []
    for size, samples, steps in [(64, 1, 20), (64, 4, 20), (64, 8, 20), (64, 16, 20),
                                 (64, 8, 10), (64, 8, 40), (32, 8, 20), (128, 8, 20)]:
        stack = test_stack(1.0, 2, size, TEST_SEED)
        settings = PosteriorSettings(samples=samples, steps=steps)
        run_setting(engine, test_stack(1.0, 1, size, TEST_SEED + 99), settings)  # warm-up
        seconds = run_setting(engine, stack, settings)["seconds"]
        rows.append({"size": size, "samples": samples, "steps": steps,
                     "seconds_per_frame": round(seconds, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return {"threads": args.threads, "rows": rows}


def write_markdown(results: dict, path: Path) -> None:
    """Tables of the benchmark for the README."""
    lines = [f"Posterior benchmark: {results['frames_per_condition']} frames of "
             f"{results['size']}x{results['size']} px per density, {results['samples']} samples, "
             f"denoiser sha256 {results['denoiser_sha256'][:12]}", "",
             "| density /um2 | setting | s/frame | J CNN | J post. mean | RMSE CNN nm | RMSE post. "
             "mean nm | pixel RMSE CNN | pixel RMSE mean | cal. x | cal. y | ZMS | MSE/var | "
             "AUSE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["conditions"]:
        for key, value in row.items():
            if not isinstance(value, dict) or "seconds_per_frame" not in value:
                continue
            lines.append(
                f"| {row['density']} | {key} | {value['seconds_per_frame']:.2f} | "
                f"{row['cnn']['jaccard']:.1f} | {value['posterior_mean']['jaccard']:.1f} | "
                f"{row['cnn']['rmse_lateral_nm']:.1f} | "
                f"{value['posterior_mean']['rmse_lateral_nm']:.1f} | "
                f"{row['cnn_pixel_rmse']:.4f} | {value['pixel_rmse']:.4f} | "
                f"{value['calibration_x'] or float('nan'):.2f} | "
                f"{value['calibration_y'] or float('nan'):.2f} | "
                f"{value['pixels']['zms']:.2f} | {value['pixels']['pooled_ratio']:.2f} | "
                f"{value['pixels']['ause']:.3f} |")
    path.write_text("\n".join(lines) + "\n")


def plot_calibration(results: dict, path: Path) -> bool:
    """Binned RMSE vs predicted std per density and setting (False without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, len(results["conditions"]), figsize=(4 * len(
        results["conditions"]), 4), squeeze=False)
    for axis, row in zip(axes[0], results["conditions"], strict=True):
        top = 0.0
        for key, value in row.items():
            if isinstance(value, dict) and "pixels" in value:
                std, rmse = np.array(value["pixels"]["curve_std_vs_rmse"]).T
                axis.plot(std, rmse, "o-", label=key)
                top = max(top, std.max(), rmse.max())
        axis.plot([0, top], [0, top], "k--", lw=1, label="calibrated")
        axis.set(title=f"{row['density']} /um2", xlabel="predicted std (KDE units)",
                 ylabel="RMSE of posterior mean")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--settings", nargs="+", default=["dpm-solver:20", "ddpm:100"],
                        help="SAMPLER:STEPS, the first is the fast default")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for --speed")
    parser.add_argument("--denoiser-weights", default=DENOISER_NAME,
                        help="shipped denoiser (default) or a run's best.safetensors")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_posterior"))
    args = parser.parse_args()
    if args.calibrate:
        report = calibrate(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name(args.out.name + "_calibration.json").write_text(
            json.dumps(report, indent=1))
        print(json.dumps({k: report[k] for k in (
            "posterior_mean_threshold", "uncertainty_model", "pixel_variance_calibration")}))
        return
    if args.speed:
        result = speed(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name(args.out.name + "_speed.json").write_text(json.dumps(result, indent=1))
        return
    results = benchmark(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_markdown(results, args.out.with_suffix(".md"))
    if plot_calibration(results, args.out.with_name(args.out.name + "_calibration.png")):
        print(f"wrote {args.out}_calibration.png")
    print(f"wrote {args.out}.json and .md")


if __name__ == "__main__":
    main()
