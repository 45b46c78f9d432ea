"""Which per-molecule uncertainty model? Fit on calibration molecules, score on test molecules.

Reads the matched molecules that ``smlm-diffusion calibrate --molecules CAL.csv`` (calibration
seeds 800000+) and ``benchmarks/bench_posterior.py --molecules TEST.csv`` (test seeds 700000+)
save, fits the uncertainty model (:func:`calibration.fit_uncertainty_model`) on the calibration
molecules as shipped and without the posterior-mean peak height, and reports per test regime
and axis the RMS of error / sigma with a bootstrap 95 % interval (molecules resampled), the mean
Gaussian negative log-likelihood (lower is better: calibrated and sharp), and the share of the
squared error carried by the 2 % largest errors (how heavy the tails are: a Gaussian gives
about 0.14).

A third row is a ceiling no user can have: the shipped form rescaled per regime and axis so
that the calibration molecules of that regime have RMS z exactly 1 (it knows the regime). How far
its test values stray from 1 is how well an RMS z measured on one set of seeds repeats on
another: the seed-to-seed spread that any model's per-regime numbers carry.

    python benchmarks/bench_uncertainty_models.py CAL.csv TEST.csv [--out P]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from napari_smlm_diffusion.calibration.validation_runs import (
    fit_molecules,
    gaussian_nll,
    molecule_arrays,
    molecules_sigma,
)

BOOTSTRAP = 1000


def regimes(table: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Molecule arrays (both axes concatenated) per regime, in file order."""
    return {name: molecule_arrays(rows) for name, rows in table.groupby("regime", sort=False)}


def without_peak(molecules: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same molecules with every peak height 1: the peak term has no effect."""
    return {**molecules, "peak_height": np.ones_like(molecules["peak_height"])}


def rms_z_interval(z: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """RMS of z and its bootstrap 95 % interval."""
    draws = rng.integers(0, len(z), (BOOTSTRAP, len(z)))
    boot = np.sqrt(np.mean(z[draws] ** 2, axis=1))
    low, high = np.quantile(boot, [0.025, 0.975])
    return float(np.sqrt(np.mean(z**2))), float(low), float(high)


def axis_rms_z(sigma: np.ndarray, molecules: dict[str, np.ndarray]) -> np.ndarray:
    """RMS of error / sigma on x and on y (the arrays hold x, then y)."""
    z2 = (molecules["error"] / sigma) ** 2
    half = len(z2) // 2
    return np.sqrt([np.mean(z2[:half]), np.mean(z2[half:])])


def per_axis(values: np.ndarray, n: int) -> np.ndarray:
    """One value per axis spread over the x-then-y molecule arrays of length ``n``."""
    return np.repeat(values, n // 2)


def score(sigma: np.ndarray, molecules: dict[str, np.ndarray],
          rng: np.random.Generator) -> dict:
    """Per-axis RMS z with intervals, mean NLL and tail share of one regime."""
    z = molecules["error"] / sigma
    half = len(z) // 2
    squared = np.sort(molecules["error"] ** 2)[::-1]
    return {"molecules": half,
            "rms_z_x": rms_z_interval(z[:half], rng), "rms_z_y": rms_z_interval(z[half:], rng),
            "nll": gaussian_nll(molecules["error"], sigma),
            "tail_share": float(squared[:max(1, len(squared) // 50)].sum() / squared.sum())}


def rounded(model: dict) -> dict:
    """The model's numbers to 4 digits (other entries as they are)."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in model.items()}


def calibration_and_test_arguments(argv: list[str] | None, description: str,
                                   default_out: str) -> argparse.Namespace:
    """The molecule files (calibration, test) and ``--out`` of a model-comparison benchmark."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("calibration", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--out", type=Path, default=Path(default_out))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = calibration_and_test_arguments(argv, __doc__.splitlines()[0],
                                          "benchmarks/results/bench_uncertainty_models")
    calibration, test = regimes(pd.read_csv(args.calibration)), regimes(pd.read_csv(args.test))
    shipped = fit_molecules(list(calibration.values()))
    flat = {**fit_molecules([without_peak(m) for m in calibration.values()]),
            "peak_height_exponent": 0.0}  # all heights 1: the fitted value has no effect

    def oracle(regime: str, molecules: dict[str, np.ndarray]) -> np.ndarray:
        own = calibration[regime]
        scale = axis_rms_z(molecules_sigma(shipped, own), own)
        return molecules_sigma(shipped, molecules) * per_axis(scale, len(molecules["error"]))

    variants = {
        "shipped form": (shipped, lambda r, m: molecules_sigma(shipped, m)),
        "without peak height": (flat, lambda r, m: molecules_sigma(flat, without_peak(m))),
        "per-regime oracle": ({**shipped, "rescaled": "per regime and axis"}, oracle),
    }
    results = {}
    for name, (model, sigma_of) in variants.items():
        rng = np.random.default_rng(0)
        per_regime = {regime: score(sigma_of(regime, m), m, rng) for regime, m in test.items()}
        values = np.array([[r["rms_z_x"][0], r["rms_z_y"][0]] for r in per_regime.values()])
        intervals = np.array([[r[a][1:] for a in ("rms_z_x", "rms_z_y")]
                              for r in per_regime.values()]).reshape(-1, 2)
        results[name] = {"model": model, "regimes": per_regime,
                         "mean_nll": float(np.mean([r["nll"] for r in per_regime.values()])),
                         "rms_z_range": [float(values.min()), float(values.max())],
                         "within_0.9_1.1": int(np.sum((values >= 0.9) & (values <= 1.1))),
                         "interval_meets_0.9_1.1": int(np.sum((intervals[:, 1] >= 0.9)
                                                              & (intervals[:, 0] <= 1.1))),
                         "values": int(values.size)}
        print(f"{name}: {json.dumps(model)}; mean NLL {results[name]['mean_nll']:.4f}; RMS z "
              f"{values.min():.2f}-{values.max():.2f}, {results[name]['within_0.9_1.1']} of "
              f"{values.size} within 0.9-1.1 ({results[name]['interval_meets_0.9_1.1']} with "
              "an interval reaching 0.9-1.1)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    names = list(variants)
    lines = [f"Uncertainty models fitted on {args.calibration.name}, scored on {args.test.name} "
             "(RMS error/sigma per axis with bootstrap 95 % interval)", "",
             "| regime | molecules | share of error^2 in top 2 % | "
             + " | ".join(f"RMS z x, y ({n})" for n in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for regime in test:
        first = results[names[0]]["regimes"][regime]
        cells = []
        for n in names:
            r = results[n]["regimes"][regime]
            cells.append(", ".join(f"{v[0]:.2f} [{v[1]:.2f}-{v[2]:.2f}]"
                                   for v in (r["rms_z_x"], r["rms_z_y"])))
        lines.append(f"| {regime} | {first['molecules']} | {first['tail_share']:.2f} | "
                     + " | ".join(cells) + " |")
    lines += [""] + [f"- {n}: mean NLL {results[n]['mean_nll']:.4f}, RMS z "
                     f"{results[n]['rms_z_range'][0]:.2f}-{results[n]['rms_z_range'][1]:.2f}, "
                     f"{results[n]['within_0.9_1.1']} of {results[n]['values']} within 0.9-1.1 "
                     f"({results[n]['interval_meets_0.9_1.1']} with an interval reaching it); "
                     f"model {json.dumps(rounded(results[n]['model']))}"
                     for n in names]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
