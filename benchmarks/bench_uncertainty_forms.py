"""Does any per-molecule input tell the miscalibrated regimes apart? Extended model forms.

Fits, on calibration molecules (``smlm-diffusion calibrate --molecules CAL.csv``), the shipped
per-molecule uncertainty model with its excess term (everything above the CRLB) multiplied by
``exp(sum_j c_j f_j)`` for one group of extra inputs ``f`` at a time (any sign of ``c``; the CRLB
stays the hard lower bound): pixel size, PSF width in camera pixels, the unresolved flag,
photons and background, and all of them; then aggregates over the molecules of the same frame,
which a run could compute without ground truth (median log of posterior spread / CRLB, mean
detection probability, log molecule count, unresolved share, log median photons), one at a time
and all together. Scores each on test molecules
(``benchmarks/bench_posterior.py --molecules TEST.csv``): mean Gaussian NLL, RMS of
error / sigma per regime and axis, and how many of them fall within 0.9-1.1. Also reports, per
test regime under the shipped form, the share of unresolved molecules, their mean (error /
sigma)^2 against that of the resolved ones, the same for molecules found in fewer than 30 % of
the samples, and the mean share of sigma^2 that is the CRLB.

    python benchmarks/bench_uncertainty_forms.py CAL.csv TEST.csv [--out P]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from napari_smlm_diffusion.calibration.fitting import (
    fit_variance_model,
    uncertainty_model_from_parameters,
)
from napari_smlm_diffusion.calibration.validation_runs import (
    fit_molecules,
    gaussian_nll,
    molecule_arrays,
    molecules_sigma,
)
from napari_smlm_diffusion.calibration.variance_models import MOLECULE_MODEL_KEYS

sys.path.insert(0, str(Path(__file__).parent))
from bench_uncertainty_models import axis_rms_z, calibration_and_test_arguments  # noqa: E402

Features = Callable[[dict], list[np.ndarray]]
EXTRA_INPUTS: dict[str, Features] = {
    "+ pixel size": lambda m: [np.log(m["pixel_size_nm"] / 100.0)],
    "+ PSF in camera pixels": lambda m: [np.log(m["psf_sigma_px"])],
    "+ unresolved": lambda m: [1.0 - m["resolved"]],
    "+ photons, background": lambda m: [np.log(m["photons"] / 1000.0),
                                        np.log(m["background"] / 50.0)],
}
FRAME_INPUTS: dict[str, Features] = {
    "+ frame: median log(spread / CRLB)": lambda m: [m["frame_spread_ratio"]],
    "+ frame: mean detection probability": lambda m: [m["frame_detection"]],
    "+ frame: log molecule count": lambda m: [m["frame_count"]],
    "+ frame: unresolved share": lambda m: [m["frame_unresolved"]],
    "+ frame: log median photons": lambda m: [m["frame_photons"]],
}
FORMS: dict[str, Features] = {
    "shipped form": lambda m: [], **EXTRA_INPUTS,
    "+ all of these": lambda m: [f for form in EXTRA_INPUTS.values() for f in form(m)],
    **FRAME_INPUTS,
    "+ all frame aggregates": lambda m: [f for form in FRAME_INPUTS.values() for f in form(m)]}
PERTURBED_STARTS = 5
RARELY_FOUND = 0.3  # detection probability below which a molecule counts as rarely found


def with_frame_aggregates(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with, per molecule, aggregates over the molecules of its frame (the inputs of
    :data:`FRAME_INPUTS`)."""
    spread_ratio = np.log(np.hypot(table.posterior_std_x_nm, table.posterior_std_y_nm)
                          / np.hypot(table.crlb_x_nm, table.crlb_y_nm))
    frames = table.assign(spread_ratio=spread_ratio).groupby(["regime", "frame"])
    return table.assign(
        frame_spread_ratio=frames["spread_ratio"].transform("median"),
        frame_detection=frames["detection_probability"].transform("mean"),
        frame_count=np.log(frames["x_nm"].transform("size")),
        frame_unresolved=1.0 - frames["resolved"].transform("mean"),
        frame_photons=np.log(frames["photons"].transform("median") / 1000.0))


def regime_molecules(table: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Per regime, :func:`molecule_arrays` plus the extra inputs (tiled like the axes)."""
    extra = ("pixel_size_nm", "psf_sigma_px", "resolved", "photons", "background",
             "frame_spread_ratio", "frame_detection", "frame_count", "frame_unresolved",
             "frame_photons")
    return {name: molecule_arrays(rows) | {c: np.tile(rows[c].to_numpy(float), 2) for c in extra}
            for name, rows in with_frame_aggregates(table).groupby("regime", sort=False)}


def form_variance(features: Features) -> Callable[[np.ndarray, dict], np.ndarray]:
    """sigma^2 of the shipped form (first five parameters) with the excess term scaled by
    ``exp(c . features)`` (the remaining parameters)."""
    shipped = len(MOLECULE_MODEL_KEYS)

    def variance(params: np.ndarray, data: dict) -> np.ndarray:
        sigma = molecules_sigma(uncertainty_model_from_parameters(params[:shipped]), data)
        exponent = sum((c * f for c, f in zip(params[shipped:], features(data), strict=True)),
                       np.zeros_like(sigma))
        return data["crlb"] ** 2 + (sigma**2 - data["crlb"] ** 2) * np.exp(exponent)

    return variance


def shipped_parameters(model: dict) -> np.ndarray:
    """Inverse of :func:`uncertainty_model_from_parameters` (zero weights at a tiny value)."""
    values = [model["spread_weight"], model["crlb_weight"], model["floor_nm"] ** 2,
              model["crowding_exponent"], model["peak_height_exponent"],
              model["detection_probability_exponent"]]
    return np.log(np.maximum(values, 1e-12))


def bound_diagnostics(model: dict, molecules: dict[str, np.ndarray]) -> dict:
    """Mean z^2 of resolved and unresolved molecules and of those found in fewer than
    ``RARELY_FOUND`` of the samples (with their shares), and mean CRLB^2 / sigma^2."""
    sigma = molecules_sigma(model, molecules)
    z2 = (molecules["error"] / sigma) ** 2
    unresolved = molecules["resolved"] == 0
    rare = molecules["detection_probability"] < RARELY_FOUND

    def mean(values: np.ndarray) -> float | None:
        return float(values.mean()) if values.size else None

    return {"unresolved_share": float(unresolved.mean()), "z2_resolved": mean(z2[~unresolved]),
            "z2_unresolved": mean(z2[unresolved]), "rarely_found_share": float(rare.mean()),
            "z2_rarely_found": mean(z2[rare]),
            "crlb_share_of_variance": float(np.mean(molecules["crlb"] ** 2 / sigma**2))}


def main(argv: list[str] | None = None) -> int:
    args = calibration_and_test_arguments(argv, __doc__.splitlines()[0],
                                          "benchmarks/results/bench_uncertainty_forms")
    calibration = regime_molecules(pd.read_csv(args.calibration))
    test = regime_molecules(pd.read_csv(args.test))
    shipped = fit_molecules(list(calibration.values()))
    base = shipped_parameters(shipped)
    sets = [m | {"e2": m["error"] ** 2} for m in calibration.values()]
    results = {}
    for name, features in FORMS.items():
        extra = len(features(sets[0]))
        rng = np.random.default_rng(0)
        starts = np.concatenate([np.tile(np.r_[base, np.zeros(extra)], (1, 1)),
                                 np.r_[base, np.zeros(extra)]
                                 + rng.normal(0.0, 0.5, (PERTURBED_STARTS, base.size + extra))])
        variance = form_variance(features)
        params = fit_variance_model(variance, sets, starts)
        values = np.array([axis_rms_z(np.sqrt(variance(params, m)), m) for m in test.values()])
        nll = np.mean([gaussian_nll(m["error"], np.sqrt(variance(params, m)))
                       for m in test.values()])
        results[name] = {"parameters": params.round(4).tolist(), "mean_nll": float(nll),
                         "rms_z": dict(zip(test, values.round(3).tolist(), strict=True)),
                         "rms_z_range": [float(values.min()), float(values.max())],
                         "within_0.9_1.1": int(np.sum((values >= 0.9) & (values <= 1.1))),
                         "values": int(values.size)}
        print(f"{name}: mean NLL {nll:.4f}, RMS z {values.min():.2f}-{values.max():.2f}, "
              f"{results[name]['within_0.9_1.1']} of {values.size} within 0.9-1.1", flush=True)
    bounds = {regime: bound_diagnostics(shipped, m) for regime, m in test.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"forms": results, "bound": bounds},
                                                        indent=1))
    lines = [f"Extended uncertainty-model forms fitted on {args.calibration.name}, scored on "
             f"{args.test.name}", "", "| form | mean NLL | RMS z range | within 0.9-1.1 |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {r['mean_nll']:.4f} | {r['rms_z_range'][0]:.2f}-"
              f"{r['rms_z_range'][1]:.2f} | {r['within_0.9_1.1']} of {r['values']} |"
              for n, r in results.items()]
    lines += ["", "Shipped form on the test molecules, resolved and unresolved apart",
              "", "| regime | unresolved share | mean z^2 resolved | mean z^2 unresolved | "
              f"share found in < {RARELY_FOUND:.0%} of samples | their mean z^2 | "
              "mean CRLB^2 / sigma^2 |", "|---|---|---|---|---|---|---|"]

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    lines += [f"| {regime} | " + " | ".join(cell(b[k]) for k in (
        "unresolved_share", "z2_resolved", "z2_unresolved", "rarely_found_share",
        "z2_rarely_found", "crlb_share_of_variance")) + " |" for regime, b in bounds.items()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
