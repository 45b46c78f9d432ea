"""Calibration runs: the posterior on simulated validation regimes, and the fit of what it reports.

A regime is a microscope (camera, pixel size, photons, background, PSF) at one density. The
validation sets span the first release's condition (sCMOS, 100 nm pixels, fluorophores drawn
afresh) and the corners of the training ranges (:data:`training_data.MICROSCOPE_CORNERS`, with
blinking), each at 0.3, 1 and 3 molecules per um^2, on seeds never used for training or testing.
:func:`calibrate` chooses the posterior-mean detection threshold, fits the per-molecule and
per-pixel variance models (each regime weighted equally) and reports, per regime, the RMS of
error / sigma and the ZMS before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..camera import preset
from ..kde import find_peaks_in_frames
from ..metrics import evaluate, match_localizations
from ..simulate import SimulatedStack, SimulationConfig, simulate_stack
from ..training_data import MICROSCOPE_CORNERS, REALISTIC_BLINKING, THRESHOLDS
from .fitting import fit_pixel_calibration, fit_uncertainty_model
from .variance_models import local_signal, molecule_sigma, pixel_variance

CALIBRATION_SEED = 800_000
DENSITIES = (0.3, 1.0, 3.0)
FRAMES_PER_STRUCTURE = 4
MATCH_TOLERANCE_NM = 250.0
MIN_FIT_VALUES = 4  # errors (both axes) a regime needs to enter the fit


@dataclass(frozen=True)
class Regime:
    """A simulated validation condition: a microscope at one density."""

    name: str
    config: SimulationConfig
    index: int  # the regime's seed is a set's base seed + index

    @property
    def psf_sigma_nm(self) -> float:
        """PSF sigma in nm (the configuration's is in camera pixels)."""
        return float(self.config.psf_sigma_px) * self.config.camera.pixel_size


def release_config(size: int, density: float) -> SimulationConfig:
    """The first release's benchmark condition: sCMOS filaments at 100 nm pixels."""
    return SimulationConfig(size=(size, size), density=density, camera=preset("sCMOS"),
                            layout="filaments")


def release_blinking_config(size: int, density: float) -> SimulationConfig:
    """The release condition with blinking fluorophores (:data:`REALISTIC_BLINKING`) instead of
    fluorophores drawn afresh every frame."""
    return replace(release_config(size, density), blinking=REALISTIC_BLINKING)


def calibration_regimes(size: int = 64, densities: Sequence[float] = DENSITIES,
                        microscopes: Sequence[str] | None = None) -> list[Regime]:
    """The release condition and the microscope corners (or ``microscopes``, by name: "release",
    the keys of ``MICROSCOPE_CORNERS`` and "release-blinking"), each at every density.

    A regime's ``index`` is its place in the list of every microscope at these densities, so
    that a selection of microscopes draws the same frames as all of them."""
    builders: dict[str, Callable[[int, float], SimulationConfig]] = {"release": release_config}
    builders.update({name: scope.config for name, scope in MICROSCOPE_CORNERS.items()})
    builders["release-blinking"] = release_blinking_config
    chosen = ["release", *MICROSCOPE_CORNERS] if microscopes is None else list(microscopes)
    unknown = sorted(set(chosen) - set(builders))
    if unknown:
        raise ValueError(f"unknown microscopes {unknown}; expected some of {list(builders)}")
    names, densities = list(builders), [float(d) for d in densities]
    return [Regime(f"{name} d{density:g}", builders[name](size, density),
                   index=names.index(name) * len(densities) + densities.index(density))
            for name in chosen for density in densities]


def regime_stack(config: SimulationConfig, frames: int, seed: int) -> SimulatedStack:
    """Frames with true KDEs, a new structure every ``FRAMES_PER_STRUCTURE`` frames (seeded from
    (seed, part)), so that a set samples many structures rather than one."""
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


@dataclass
class RegimeRun:
    """The posterior of one regime's validation stack."""

    regime: Regime
    stack: SimulatedStack
    posteriors: list

    @property
    def fine_pixel_nm(self) -> float:
        return self.regime.config.fine_pixel_nm

    @property
    def means(self) -> np.ndarray:
        return np.stack([p.mean for p in self.posteriors])


def run_regimes(engine, regimes: Sequence[Regime], frames: int, settings,
                seed: int = CALIBRATION_SEED,
                progress: Callable[[str], None] = lambda _: None) -> list[RegimeRun]:
    """Sample the posterior of ``frames`` validation frames of every regime."""
    from ..posterior import iter_posterior

    runs = []
    for k, regime in enumerate(regimes):
        progress(f"posterior of {regime.name} ({k + 1}/{len(regimes)})")
        stack = regime_stack(regime.config, frames, seed + regime.index)
        posteriors = [b.frames[0] for b in iter_posterior(
            stack.frames, regime.config.camera, engine, range(frames), settings,
            regime.psf_sigma_nm)]
        runs.append(RegimeRun(regime, stack, posteriors))
    return runs


def choose_threshold(runs: Sequence[RegimeRun]) -> tuple[float, dict[float, float]]:
    """Posterior-mean detection threshold with the best mean efficiency over the regimes."""
    efficiency = {float(t): float(np.mean([
        np.nan_to_num(evaluate(run.stack.truth, find_peaks_in_frames(run.means, run.fine_pixel_nm,
                                                               float(t)))["efficiency"],
                      nan=-100.0) for run in runs])) for t in THRESHOLDS}
    return max(efficiency, key=efficiency.get), efficiency


def matched_table(truth: pd.DataFrame, table: pd.DataFrame, regime: Regime) -> pd.DataFrame:
    """The localizations of ``table`` matched to ``truth`` within ``MATCH_TOLERANCE_NM``, with
    their errors (``error_x_nm``, ``error_y_nm``) and the regime's name, pixel size and PSF
    width in camera pixels."""
    match = match_localizations(truth, table, MATCH_TOLERANCE_NM)
    pixel_nm = float(regime.config.camera.pixel_size)
    return table.iloc[match.loc_index].reset_index(drop=True).assign(
        error_x_nm=match.dx, error_y_nm=match.dy, regime=regime.name, pixel_size_nm=pixel_nm,
        psf_sigma_px=regime.psf_sigma_nm / pixel_nm)


def molecule_arrays(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Errors and the ingredients of the uncertainty model of matched molecules
    (:func:`matched_table`), both axes concatenated."""

    def both(column: str) -> np.ndarray:
        return np.concatenate([rows[f"{column}_x_nm"], rows[f"{column}_y_nm"]]).astype(float)

    return {"error": both("error"), "spread": both("posterior_std"), "crlb": both("crlb"),
            "density": np.tile(rows.local_density_um2.to_numpy(float), 2),
            "peak_height": np.tile(rows.score.to_numpy(float), 2),
            "detection_probability": np.tile(rows.detection_probability.to_numpy(float), 2)}


def matched_molecules(run: RegimeRun, engine, threshold: float) -> pd.DataFrame:
    """Posterior localizations of a regime matched to the truth (:func:`matched_table`)."""
    from ..posterior import localize_posterior

    table = pd.concat([localize_posterior(p, run.stack.frames[p.frame], run.regime.config.camera,
                                          engine, run.regime.psf_sigma_nm, threshold)
                       for p in run.posteriors], ignore_index=True)
    return matched_table(run.stack.truth, table, run.regime)


def save_molecules(tables: Sequence[pd.DataFrame], path: Path) -> None:
    """Write matched molecules of several regimes as one CSV (atomically)."""
    from ..io import atomic_write

    with atomic_write(path) as temporary:
        pd.concat(tables, ignore_index=True).to_csv(temporary, index=False)


def signal_mask(truth: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The pixels that carry signal: true KDE or posterior mean above 0.05."""
    return (truth > 0.05) | (mean > 0.05)


def signal_pixels(run: RegimeRun) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared error of the mean, sample variance and local signal over the signal pixels."""
    mean = run.means
    variance = np.stack([p.variance for p in run.posteriors])
    mask = signal_mask(run.stack.kdes, mean)
    error2 = (run.stack.kdes - mean)[mask].astype(np.float64) ** 2
    return error2, variance[mask].astype(np.float64), \
        local_signal(mean, run.fine_pixel_nm)[mask]


def molecules_sigma(model: dict, molecules: dict[str, np.ndarray]) -> np.ndarray:
    """The sigma ``model`` reports for matched molecules (:func:`molecule_arrays`)."""
    return molecule_sigma(model, molecules["spread"], molecules["crlb"], molecules["density"],
                          molecules["peak_height"], molecules["detection_probability"])


def fit_molecules(molecules: Sequence[dict[str, np.ndarray]]) -> dict:
    """:func:`fit_uncertainty_model` on the matched molecules of several regimes, one set each
    (:func:`molecule_arrays`); regimes with fewer than ``MIN_FIT_VALUES`` values are left out,
    ValueError when none is left."""
    molecules = [m for m in molecules if len(m["error"]) >= MIN_FIT_VALUES]
    if not molecules:
        raise ValueError("no regime has enough matched molecules to calibrate on")
    return fit_uncertainty_model(*([m[key] for m in molecules] for key in
                                   ("error", "spread", "crlb", "density", "peak_height",
                                    "detection_probability")))


def rms_z(model: dict, molecules: dict[str, np.ndarray]) -> float:
    """RMS of error / reported sigma over a regime's matched molecules (both axes)."""
    return float(np.sqrt(np.mean((molecules["error"] / molecules_sigma(model, molecules)) ** 2)))


def gaussian_nll(error: np.ndarray, sigma: np.ndarray) -> float:
    """Mean Gaussian negative log-likelihood of ``error`` under ``sigma``, without its constant:
    mean(log sigma^2 + (error / sigma)^2)."""
    return float(np.mean(np.log(sigma**2) + (error / sigma) ** 2))


def mean_nll(model: dict, molecules: Sequence[dict[str, np.ndarray]]) -> float:
    """Mean over regimes of :func:`gaussian_nll` of the matched molecules' errors under the
    sigma ``model`` reports; regimes without molecules are left out (NaN when none has any)."""
    values = [gaussian_nll(m["error"], molecules_sigma(model, m))
              for m in molecules if len(m["error"])]
    return float(np.mean(values)) if values else float("nan")


def zms(error2: np.ndarray, variance: np.ndarray) -> float:
    """mean(error^2 / variance), variances floored at 1e-8."""
    return float(np.mean(error2 / np.maximum(variance, 1e-8)))


def calibrate(engine, runs: Sequence[RegimeRun], molecules_csv: Path | None = None) -> dict:
    """Detection threshold, per-molecule and per-pixel variance models fitted on ``runs``.

    Returns the card's calibration record: ``posterior_mean_threshold``,
    ``uncertainty_model``, ``pixel_variance_calibration`` and per-regime diagnostics (RMS of
    error / sigma with the CRLB alone, the uncalibrated model and the fitted one; ZMS of the
    sample variance and of the calibrated map; matched molecules). ``molecules_csv``: where to
    save the matched molecules of every regime (:func:`matched_table`), for refitting.
    """
    threshold, efficiency = choose_threshold(runs)
    tables = [matched_molecules(run, engine, threshold) for run in runs]
    if molecules_csv is not None:
        save_molecules(tables, molecules_csv)
    molecules = [molecule_arrays(table) for table in tables]
    model = fit_molecules(molecules)
    pixels = [signal_pixels(run) for run in runs]
    pixel_model = fit_pixel_calibration(*zip(*pixels, strict=True))
    per_regime = {
        run.regime.name: {
            **molecule_diagnostics(model, m),
            "zms_sample_variance": zms(e2, v),
            "zms": zms(e2, pixel_variance(pixel_model, v, signal)),
        }
        for run, m, (e2, v, signal) in zip(runs, molecules, pixels, strict=True)}
    return {"posterior_mean_threshold": threshold, "mean_efficiency_by_threshold": efficiency,
            "uncertainty_model": model, "pixel_variance_calibration": pixel_model,
            "regimes": per_regime}


def molecule_diagnostics(model: dict, molecules: dict[str, np.ndarray]) -> dict:
    """A regime's matched molecules and their RMS of error / sigma with the CRLB alone, the
    uncalibrated model and ``model`` (None without molecules)."""
    found = len(molecules["error"]) > 0
    return {"molecules": int(len(molecules["error"]) // 2),
            **{key: rms_z(m, molecules) if found else None for key, m in (
                ("rms_z_crlb_alone", {"spread_weight": 0.0}), ("rms_z_uncalibrated", {}),
                ("rms_z", model))}}


def refit_molecule_model(record: dict, table: pd.DataFrame, source: str) -> dict:
    """The calibration ``record`` with its per-molecule model refitted on saved matched
    molecules (``calibrate --molecules``, one ``regime`` column; the same models and threshold
    as the record's run) and each regime's molecule diagnostics recomputed; the threshold and
    the std-map calibration are kept. ``source`` names the molecules in the record."""
    required = {"regime", "frame", "error_x_nm", "error_y_nm", "posterior_std_x_nm",
                "posterior_std_y_nm", "crlb_x_nm", "crlb_y_nm", "local_density_um2", "score",
                "detection_probability"}
    missing = sorted(required - set(table.columns))
    if missing:
        raise ValueError(f"{source} lacks the columns {missing}: expected the matched "
                         "molecules saved by smlm-diffusion calibrate --molecules")
    molecules = {name: molecule_arrays(rows) for name, rows in table.groupby("regime",
                                                                             sort=False)}
    unknown = sorted(set(molecules) - set(record.get("regimes", {})))
    if unknown:
        raise ValueError(f"{source} has regimes {unknown} that the card's calibration does "
                         f"not; expected some of {sorted(record.get('regimes', {}))}")
    model = fit_molecules(list(molecules.values()))
    regimes = {name: {**values, **molecule_diagnostics(model, molecules[name])}
               if name in molecules else values for name, values in record["regimes"].items()}
    return {**record, "uncertainty_model": model, "regimes": regimes,
            "uncertainty_model_refit": {"molecules": source,
                                        "frames_per_regime": int(table["frame"].max()) + 1}}
