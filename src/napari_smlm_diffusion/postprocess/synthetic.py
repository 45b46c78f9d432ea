"""Simulated localization tables with known truth, for tests and benchmarks of the
post-processing steps (no camera images: localizations are drawn directly)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..simulate import Structure


def smooth_drift(n_frames: int, amplitude_nm: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth drift curve (n_frames, 2) in nm, zero at frame 0: a linear trend plus two slow
    sinusoids per axis, each axis spanning about ``amplitude_nm``."""
    t = np.linspace(0.0, 1.0, n_frames)
    curve = np.empty((n_frames, 2))
    for axis in range(2):
        trend = rng.uniform(0.5, 1.0) * rng.choice([-1, 1]) * t
        waves = sum(rng.uniform(0.1, 0.25) * np.sin(2 * np.pi * (k * t + rng.uniform()))
                    for k in (0.7, 1.6))
        shape = trend + waves
        shape -= shape[0]
        curve[:, axis] = amplitude_nm * shape / max(np.ptp(shape), 1e-9)
    return curve


def structure_sites(fov_nm: float, rng: np.random.Generator, layout: str = "mixed") -> np.ndarray:
    """Binding sites (m, 2) in nm of a simulated structure in a ``fov_nm`` square field."""
    return Structure(layout, (0.0, 0.0, fov_nm, fov_nm), rng).sites


def sample_sites(
    sites: np.ndarray,
    n_frames: int,
    per_frame: float,
    precision_nm: float | tuple[float, float],
    rng: np.random.Generator,
    drift_nm: np.ndarray | None = None,
) -> pd.DataFrame:
    """Localizations of random sites: Poisson(``per_frame``) per frame, each with Gaussian
    noise of ``precision_nm`` (a number, or a (low, high) range drawn per localization,
    reported in ``uncertainty_nm``), plus the frame's drift.

    Returns
    -------
    DataFrame with ``frame``, ``x_nm``, ``y_nm``, ``photons``, ``uncertainty_nm`` and
    ``site`` (index of the true site).
    """
    counts = rng.poisson(per_frame, n_frames)
    frames = np.repeat(np.arange(n_frames), counts)
    site = rng.integers(0, len(sites), frames.size)
    low, high = (precision_nm, precision_nm) if np.isscalar(precision_nm) else precision_nm
    sigma = rng.uniform(low, high, frames.size)
    xy = sites[site] + rng.normal(0.0, 1.0, (frames.size, 2)) * sigma[:, None]
    if drift_nm is not None:
        xy += drift_nm[frames]
    return pd.DataFrame({"frame": frames, "x_nm": xy[:, 0], "y_nm": xy[:, 1],
                         "photons": rng.uniform(500, 5000, frames.size), "uncertainty_nm": sigma,
                         "site": site})


def simulate_blinks(
    n_molecules: int,
    n_frames: int,
    fov_nm: float,
    mean_on_frames: float,
    precision_nm: tuple[float, float],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Molecules that switch on once at a random frame for a geometric number of consecutive
    frames (mean ``mean_on_frames``), localized in each with an uncertainty drawn from
    ``precision_nm``; column ``molecule`` and the true positions ``true_x_nm``/``true_y_nm``.
    """
    x = rng.uniform(0, fov_nm, n_molecules)
    y = rng.uniform(0, fov_nm, n_molecules)
    start = rng.integers(0, n_frames, n_molecules)
    length = np.minimum(rng.geometric(1.0 / mean_on_frames, n_molecules), n_frames - start)
    molecule = np.repeat(np.arange(n_molecules), length)
    offset = np.arange(molecule.size) - np.repeat(np.cumsum(length) - length, length)
    sigma = rng.uniform(*precision_nm, molecule.size)
    return pd.DataFrame({
        "frame": start[molecule] + offset,
        "x_nm": x[molecule] + rng.normal(0, 1, molecule.size) * sigma,
        "y_nm": y[molecule] + rng.normal(0, 1, molecule.size) * sigma,
        "photons": rng.uniform(500, 5000, molecule.size),
        "uncertainty_nm": sigma,
        "molecule": molecule,
        "true_x_nm": x[molecule],
        "true_y_nm": y[molecule],
    }).sort_values("frame", kind="stable").reset_index(drop=True)
