"""Diffusion posterior on simulated data: localization, calibration and speed.

Test sets: the calibration regimes (:func:`calibration.validation_runs.calibration_regimes`: the
first release's sCMOS filaments at 100 nm pixels and the corners of the training ranges with
blinking fluorophores, each at 0.3, 1 and 3 per um^2), 64x64 frames, seeds from 700000 (never used
in training or calibration). For each regime and sampler setting:

- localization from the posterior mean vs from the CNN estimate y_hat (Jaccard, RMSE, 250 nm);
- per-localization calibration: RMS of (error / reported sigma) per axis over matches, the
  Spearman correlation of the reported sigma with |error| next to that of the CRLB alone, and the
  fraction of molecules reported below their CRLB (must be 0);
- per-pixel calibration of the std map against the true KDE, over the pixels where the true KDE
  or the mean exceeds 0.05: ZMS = mean((y - mean)^2 / var), the pooled ratio
  mean((y - mean)^2) / mean(var) and AUSE (area between the sparsification curve ordered by
  predicted std and the oracle ordered by the true error, relative to the RMSE). With N samples a
  calibrated Gaussian posterior gives a pooled ratio of 1 + 1/N and a ZMS of
  (1 + 1/N)(N - 1)/(N - 3): 1.13 and 1.58 for N = 8;
- seconds per frame, network evaluations per sample.

A reliability diagram (binned reported sigma vs RMS error, per regime) is saved as PNG. The
calibration itself is fitted by ``smlm-diffusion calibrate`` on other seeds.

    python benchmarks/bench_posterior.py [--frames 8] [--samples 8] [--microscopes ...] [--out P]
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
from scipy.stats import spearmanr

from napari_smlm_diffusion.calibration.validation_runs import (
    RegimeRun,
    calibration_regimes,
    matched_table,
    regime_stack,
    release_config,
    save_molecules,
    signal_mask,
    signal_pixels,
    zms,
)
from napari_smlm_diffusion.kde import find_peaks_in_frames
from napari_smlm_diffusion.metrics import (
    evaluate,
    uncertainty_calibration,
)
from napari_smlm_diffusion.posterior import (
    PosteriorEngine,
    PosteriorSettings,
    iter_posterior,
)
from napari_smlm_diffusion.weights import DENOISER_NAME

TEST_SEED = 700_000
SIGMA_BINS = 8


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


def pixel_calibration(error2: np.ndarray, variance: np.ndarray) -> dict:
    """ZMS, pooled ratio and AUSE of a std map over the pixels that carry signal."""
    std = np.sqrt(np.maximum(variance, 1e-8))
    return {"zms": zms(error2, variance), "pooled_ratio": float(error2.mean() / variance.mean()),
            "ause": sparsification_ause(error2, std), "pixels": int(error2.size)}


def molecule_calibration(rows: pd.DataFrame) -> dict:
    """Per-localization calibration of matched molecules (``matched_table``): RMS z per axis,
    Spearman of sigma and of the CRLB with |error|, the share below the CRLB and the binned
    reliability curve (sigma vs RMS error)."""
    if len(rows) < 3:
        return {"molecules": len(rows)}
    sigma = np.concatenate([rows.uncertainty_x_nm, rows.uncertainty_y_nm])
    crlb = np.concatenate([rows.crlb_x_nm, rows.crlb_y_nm])
    error = np.abs(np.concatenate([rows.error_x_nm, rows.error_y_nm]))
    edges = np.quantile(sigma, np.linspace(0, 1, SIGMA_BINS + 1))
    bins = np.clip(np.digitize(sigma, edges[1:-1]), 0, SIGMA_BINS - 1)
    curve = [(float(np.sqrt(np.mean(sigma[bins == b] ** 2))),
              float(np.sqrt(np.mean(error[bins == b] ** 2))))
             for b in range(SIGMA_BINS) if np.any(bins == b)]
    rms_x, rms_y = uncertainty_calibration(rows.error_x_nm, rows.error_y_nm,
                                           rows.uncertainty_x_nm.to_numpy(),
                                           rows.uncertainty_y_nm.to_numpy())
    return {"molecules": len(rows), "rms_z_x": rms_x, "rms_z_y": rms_y,
            "spearman_sigma": float(spearmanr(sigma, error).statistic),
            "spearman_crlb": float(spearmanr(crlb, error).statistic),
            "below_crlb": float(np.mean(sigma < crlb * (1 - 1e-9))),
            "curve_sigma_vs_rmse": curve}


def run_setting(engine: PosteriorEngine, run_stack, regime, settings: PosteriorSettings
                ) -> tuple[RegimeRun, pd.DataFrame, float]:
    """Posterior of every frame of a regime's stack: the run, the table, seconds per frame."""
    frames = range(len(run_stack.frames))
    start = time.perf_counter()
    batches = list(iter_posterior(run_stack.frames, regime.config.camera, engine, frames,
                                  settings, psf_sigma_nm=regime.psf_sigma_nm))
    seconds = (time.perf_counter() - start) / len(frames)
    run = RegimeRun(regime, run_stack, [b.frames[0] for b in batches])
    return run, pd.concat([b.localizations for b in batches], ignore_index=True), seconds


def benchmark(args) -> dict:
    engine = PosteriorEngine.load(denoiser_weights=args.denoiser_weights, device="cpu")
    threshold = engine.card.detection_threshold
    results = {"denoiser_sha256": engine.card.sha256, "samples": args.samples,
               "frames_per_condition": args.frames, "size": args.size, "conditions": []}
    matched = []
    for regime in calibration_regimes(args.size, microscopes=args.microscopes):
        stack = regime_stack(regime.config, args.frames, TEST_SEED + regime.index)
        camera, fine = regime.config.camera, regime.config.fine_pixel_nm
        y_hat = engine.kde.predict(stack.frames, camera)
        cnn = evaluate(stack.truth, find_peaks_in_frames(y_hat, fine, threshold))
        row = {"regime": regime.name, "seed": TEST_SEED + regime.index,
               "cnn": {m: cnn[m] for m in ("jaccard", "rmse_lateral_nm")},
               "cnn_pixel_rmse": float(np.sqrt(np.mean((y_hat - stack.kdes) ** 2)))}
        for text in args.settings:
            sampler, steps = parse_setting(text)
            settings = PosteriorSettings(samples=args.samples, steps=steps, sampler=sampler)
            run, table, seconds = run_setting(engine, stack, regime, settings)
            matched.append(matched_table(stack.truth, table, regime).assign(setting=text))
            scored = evaluate(stack.truth, table)
            error2, sample_variance, _ = signal_pixels(run)
            mask_variance = np.stack([p.reported_variance for p in run.posteriors])
            reported = mask_variance[signal_mask(stack.kdes, run.means)].astype(np.float64)
            row[text] = {
                "seconds_per_frame": seconds, "nfe_per_sample": steps,
                "posterior_mean": {m: scored[m] for m in ("jaccard", "rmse_lateral_nm")},
                "pixel_rmse": float(np.sqrt(np.mean((run.means - stack.kdes) ** 2))),
                "molecules": molecule_calibration(matched[-1]),
                "pixels": pixel_calibration(error2, reported),
                "pixels_sample_variance": pixel_calibration(error2, sample_variance),
            }
            mol = row[text]["molecules"]
            print(json.dumps({"regime": regime.name, text: {
                "s/frame": round(seconds, 2), "J mean": round(scored["jaccard"], 1),
                "J cnn": round(cnn["jaccard"], 1),
                "RMS z": [round(mol.get("rms_z_x", float("nan")), 2),
                          round(mol.get("rms_z_y", float("nan")), 2)],
                "Spearman sigma/CRLB": [round(mol.get("spearman_sigma", float("nan")), 2),
                                        round(mol.get("spearman_crlb", float("nan")), 2)],
                "ZMS": round(row[text]["pixels"]["zms"], 2)}}), flush=True)
        results["conditions"].append(row)
    if args.molecules:
        save_molecules(matched, args.molecules)
    return results


def speed(args) -> dict:
    """Seconds per frame as a function of samples, steps and frame size (DPM-Solver)."""
    torch.set_num_threads(args.threads)
    engine = PosteriorEngine.load(denoiser_weights=args.denoiser_weights, device="cpu")
    rows = []
    for size, samples, steps in [(64, 1, 20), (64, 4, 20), (64, 8, 20), (64, 16, 20),
                                 (64, 8, 10), (64, 8, 40), (32, 8, 20), (128, 8, 20)]:
        regime = calibration_regimes(size, [1.0], ["release"])[0]
        stack = regime_stack(release_config(size, 1.0), 2, TEST_SEED)
        settings = PosteriorSettings(samples=samples, steps=steps)
        warm_up = regime_stack(release_config(size, 1.0), 1, TEST_SEED + 99)
        run_setting(engine, warm_up, regime, settings)
        seconds = run_setting(engine, stack, regime, settings)[2]
        rows.append({"size": size, "samples": samples, "steps": steps,
                     "seconds_per_frame": round(seconds, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return {"threads": args.threads, "rows": rows}


def write_markdown(results: dict, path: Path) -> None:
    """Tables of the benchmark for the docs."""
    lines = [f"Posterior benchmark: {results['frames_per_condition']} frames of "
             f"{results['size']}x{results['size']} px per regime, {results['samples']} samples, "
             f"denoiser sha256 {results['denoiser_sha256'][:12]}", "",
             "| regime | setting | s/frame | J CNN | J post. mean | RMSE CNN nm | RMSE mean nm | "
             "RMS z x | RMS z y | Spearman sigma | Spearman CRLB | below CRLB | ZMS | MSE/var | "
             "AUSE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["conditions"]:
        for key, value in row.items():
            if not isinstance(value, dict) or "seconds_per_frame" not in value:
                continue
            mol = value["molecules"]
            cells = [row["regime"], key, f"{value['seconds_per_frame']:.2f}",
                     f"{row['cnn']['jaccard']:.1f}", f"{value['posterior_mean']['jaccard']:.1f}",
                     f"{row['cnn']['rmse_lateral_nm']:.1f}",
                     f"{value['posterior_mean']['rmse_lateral_nm']:.1f}"]
            cells += [f"{mol[k]:.2f}" if k in mol else "n/a" for k in (
                "rms_z_x", "rms_z_y", "spearman_sigma", "spearman_crlb", "below_crlb")]
            cells += [f"{value['pixels']['zms']:.2f}", f"{value['pixels']['pooled_ratio']:.2f}",
                      f"{value['pixels']['ause']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot_reliability(results: dict, path: Path) -> bool:
    """Reliability diagram: binned reported sigma vs RMS error, one panel per microscope, one
    curve per density (first setting). False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        return False
    setting = results["settings"][0]
    scopes = sorted({row["regime"].rsplit(" d", 1)[0] for row in results["conditions"]})
    figure, axes = plt.subplots(1, len(scopes), figsize=(3.6 * len(scopes), 3.6),
                                squeeze=False)
    for axis, scope in zip(axes[0], scopes, strict=True):
        top = 1.0
        for row in results["conditions"]:
            curve = row[setting]["molecules"].get("curve_sigma_vs_rmse")
            if row["regime"].rsplit(" d", 1)[0] != scope or not curve:
                continue
            sigma, rmse = np.array(curve).T
            axis.plot(sigma, rmse, "o-", label=row["regime"].rsplit(" ", 1)[1])
            top = max(top, sigma.max(), rmse.max())
        axis.plot([0, top], [0, top], "k--", lw=1, label="calibrated")
        axis.set(title=scope, xlabel="reported sigma (nm)", ylabel="RMS error (nm)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
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
    parser.add_argument("--microscopes", nargs="+", default=None,
                        help="regimes by name (default: release and every corner)")
    parser.add_argument("--molecules", type=Path,
                        help="save the matched molecules of every regime (CSV) for refitting")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_posterior"))
    args = parser.parse_args()
    if args.speed:
        result = speed(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name(args.out.name + "_speed.json").write_text(json.dumps(result, indent=1))
        return
    results = benchmark(args)
    results["settings"] = args.settings
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_markdown(results, args.out.with_suffix(".md"))
    if plot_reliability(results, args.out.with_name(args.out.name + "_reliability.png")):
        print(f"wrote {args.out}_reliability.png")
    print(f"wrote {args.out}.json and .md")


if __name__ == "__main__":
    main()
