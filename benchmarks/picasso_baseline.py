"""Picasso baseline for the localization benchmarks.

Runs Picasso's (PyPI ``picassosr``) net-gradient spot identification and its maximum-likelihood
Gaussian fit on an in-memory ADU stack and returns the localizations in this package's convention:
``frame`` (0-based), ``x_nm`` and ``y_nm`` (nm from the top-left corner of the top-left pixel, x
along columns) and ``photons`` (photons arriving at the camera, as in
:mod:`napari_smlm_diffusion.camera`).

Picasso is imported lazily, so this module can be imported without it (the benchmark then runs
only our method). Install it in a separate environment, e.g. ``/work/venv-bench``.

Conventions bridged here
------------------------
* Picasso's x, y are in camera pixels with the *centre* of pixel (row r, column c) at (c, r); ours
  put the corner of the top-left pixel at 0, so ``x_nm = (x_picasso + 0.5) * pixel_size``.
* Picasso converts ADU to photo-electrons, ``(ADU - Baseline) * Sensitivity / Gain`` (it ignores
  ``Qe`` on purpose since v0.6), so its ``photons`` are detected photons; they are divided by the
  quantum efficiency to give arriving photons.
* The net gradient is computed on the raw ADU frames, so thresholds are in ADU and scale with the
  camera's ADU per photon (see :func:`default_thresholds`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from napari_smlm_diffusion.camera import Camera
from napari_smlm_diffusion.metrics import evaluate

FIT_METHODS = ("gaussmle", "gaussmle-legacy")
OUTPUT_COLUMNS = ("frame", "x_nm", "y_nm", "photons")
# Convergence settings of the deprecated picasso.gaussmle Newton solver (Picasso Localize's
# historical MLE defaults).
LEGACY_EPS = 1e-3
LEGACY_MAX_IT = 1000


def _picasso():
    """Import Picasso's localization modules (quietly: it prints and warns on import)."""
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from picasso import gaussmle, lib, localize
    return localize, gaussmle, lib


def picasso_version() -> str:
    """Installed picassosr version (or "not installed")."""
    try:
        from importlib.metadata import version

        return version("picassosr")
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return "not installed"


def camera_info(camera: Camera) -> dict:
    """Picasso camera-info dict for one of our cameras.

    Both packages use the same definitions: ``Sensitivity`` is electrons per ADU, ``Gain`` the EM
    gain (1 for sCMOS), ``Qe`` the quantum efficiency and ``Pixelsize`` nm per camera pixel.
    """
    return {
        "Baseline": float(camera.baseline),
        "Sensitivity": float(camera.sensitivity),
        "Gain": float(camera.em_gain),
        "Qe": float(camera.quantum_efficiency),
        "Pixelsize": float(camera.pixel_size),
    }


def _movie_info(frames: np.ndarray) -> list[dict]:
    """Minimal Picasso movie metadata (what ``lib.ensure_sanity`` reads)."""
    n_frames, height, width = frames.shape
    return [{"Frames": int(n_frames), "Height": int(height), "Width": int(width)}]


def _check_frames(frames_adu: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames_adu)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3:
        raise ValueError(f"frames must be (T, H, W), got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "frame": np.empty(0, np.int64),
            "x_nm": np.empty(0),
            "y_nm": np.empty(0),
            "photons": np.empty(0),
            "net_gradient": np.empty(0),
        }
    )


def picasso_localize_raw(
    frames_adu: np.ndarray,
    camera: Camera,
    min_net_gradient: float,
    box: int = 7,
    method: str = "gaussmle",
) -> pd.DataFrame:
    """Identify and fit with Picasso; returns Picasso's own table (pixel-centre coordinates).

    ``method="gaussmle"`` is the MLE Gaussian fit of the installed Picasso (``localize`` with
    ``fitting_method="gaussmle"``: Levenberg-Marquardt on the Poisson likelihood, elliptical
    Gaussian evaluated at pixel centres). ``"gaussmle-legacy"`` is the older
    ``picasso.gaussmle.gaussmle(spots, eps, max_it, method="sigma")`` Newton solver (Smith et
    al. 2010, isotropic pixel-integrated Gaussian), deprecated since Picasso 0.11.

    Localizations failing Picasso's own sanity check (non-finite values, negative positions,
    precisions, widths or photons, or outside the frame; ``lib.ensure_sanity``, as Picasso
    Localize applies when saving) are dropped.
    """
    if method not in FIT_METHODS:
        raise ValueError(f"unknown Picasso fit method {method!r}; expected one of {FIT_METHODS}")
    if box < 3 or box % 2 == 0:
        raise ValueError(f"box must be an odd integer >= 3, got {box}")
    frames = _check_frames(frames_adu)
    localize, gaussmle, lib = _picasso()
    info = _movie_info(frames)
    cam = camera_info(camera)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "gaussmle":
            locs = localize.localize_frames(
                frames,
                info,
                {"Min. Net Gradient": float(min_net_gradient), "Box Size": int(box)},
                camera_info=cam,
                fitting_method="gaussmle",
                threaded=False,
            )
        else:
            ids, _ = localize.identify(
                frames, float(min_net_gradient), int(box), threaded=False, return_info=True
            )
            if len(ids) == 0:
                return pd.DataFrame(columns=["frame", "x", "y", "photons", "net_gradient"])
            spots = localize.get_spots(frames, ids, int(box), cam)
            spots = np.maximum(spots, 0.0)  # the Poisson likelihood needs non-negative counts
            theta, crlbs, likelihoods, iterations = gaussmle.gaussmle(
                spots, LEGACY_EPS, LEGACY_MAX_IT, method="sigma"
            )
            locs = gaussmle.locs_from_fits(
                ids, theta, crlbs, likelihoods, iterations, int(box), spherical=True
            )
        if len(locs):
            locs = lib.ensure_sanity(locs, info)
    return locs.reset_index(drop=True)


def to_package_convention(locs: pd.DataFrame, camera: Camera) -> pd.DataFrame:
    """Picasso table -> ``frame, x_nm, y_nm, photons, net_gradient`` in our convention."""
    if len(locs) == 0:
        return _empty()
    px = float(camera.pixel_size)
    return pd.DataFrame(
        {
            "frame": np.asarray(locs["frame"], dtype=np.int64),
            "x_nm": (np.asarray(locs["x"], dtype=np.float64) + 0.5) * px,
            "y_nm": (np.asarray(locs["y"], dtype=np.float64) + 0.5) * px,
            "photons": np.asarray(locs["photons"], dtype=np.float64)
            / float(camera.quantum_efficiency),
            "net_gradient": np.asarray(locs["net_gradient"], dtype=np.float64),
        }
    )


def picasso_localize(
    frames_adu: np.ndarray,
    camera: Camera,
    min_net_gradient: float,
    box: int = 7,
    method: str = "gaussmle",
) -> pd.DataFrame:
    """Localize a (T, H, W) ADU stack with Picasso (net-gradient identification + MLE fit).

    Parameters
    ----------
    frames_adu : ndarray, shape (T, H, W)
        Camera counts (uint16).
    camera : Camera
        Camera of the recording (baseline, sensitivity, EM gain, QE, pixel size).
    min_net_gradient : float
        Picasso's identification threshold (net gradient, in ADU).
    box : int
        Odd box size in pixels for identification and fitting.
    method : {"gaussmle", "gaussmle-legacy"}
        Which Picasso MLE fit, see :func:`picasso_localize_raw`.

    Returns
    -------
    DataFrame
        Columns ``frame`` (0-based), ``x_nm``, ``y_nm`` (from the top-left corner of the
        top-left pixel, x along columns), ``photons`` (arriving photons) and ``net_gradient``.
    """
    raw = picasso_localize_raw(frames_adu, camera, min_net_gradient, box, method)
    return to_package_convention(raw, camera)


def default_thresholds(camera: Camera, n: int = 41) -> np.ndarray:
    """Log-spaced net-gradient thresholds (ADU) to sweep for a camera.

    The net gradient sums intensity differences in ADU, so the range is set in photons and
    scaled by the camera's ADU per photon: 10 to 10,000 photon-equivalents (about 2 to 2,000
    net-gradient units per photon of peak brightness for a 1.2 px PSF), which brackets the
    optimum from noise-dominated to only the brightest spots.
    """
    return np.geomspace(10.0, 10_000.0, n) * camera.adu_per_photon


def best_threshold(
    frames: np.ndarray,
    truth: pd.DataFrame,
    camera: Camera,
    candidates: Sequence[float] | np.ndarray | None = None,
    box: int = 7,
    method: str = "gaussmle",
    tolerance_nm: float = 250.0,
) -> tuple[float, dict]:
    """Net-gradient threshold with the best Jaccard index on the ground truth.

    Picasso identifies all local maxima with a net gradient above the threshold and fits each
    one independently, so localizing once at the lowest candidate and then keeping the
    localizations whose net gradient exceeds each candidate gives exactly the result of a
    separate run per candidate.

    Parameters
    ----------
    frames : ndarray, shape (T, H, W)
        ADU stack.
    truth : DataFrame
        Ground truth (``frame``, ``x_nm``, ``y_nm``).
    camera : Camera
        Camera of the stack.
    candidates : sequence of float, optional
        Thresholds to try (ADU); default :func:`default_thresholds`.
    box, method
        As for :func:`picasso_localize`.
    tolerance_nm : float
        Matching tolerance of the Jaccard index used for the choice.

    Returns
    -------
    threshold : float
        The best candidate (the lowest one among ties).
    metrics : dict
        :func:`napari_smlm_diffusion.metrics.evaluate` at that threshold, plus ``sweep``: a list
        of ``(threshold, jaccard)`` pairs for every candidate.
    """
    grid = np.sort(
        np.asarray(default_thresholds(camera) if candidates is None else candidates, float)
    )
    if grid.size == 0:
        raise ValueError("need at least one candidate threshold")
    locs = picasso_localize(frames, camera, float(grid[0]), box, method)
    ng = locs["net_gradient"].to_numpy()
    best_value, best_metrics, sweep = float(grid[0]), None, []
    for value in grid:
        # Picasso keeps maxima with net gradient strictly above the threshold.
        metrics = evaluate(truth, locs[ng > value], tolerance_nm)
        sweep.append((float(value), float(metrics["jaccard"])))
        if best_metrics is None or metrics["jaccard"] > best_metrics["jaccard"]:
            best_value, best_metrics = float(value), metrics
    best_metrics = dict(best_metrics)
    best_metrics["sweep"] = sweep
    if best_value in (float(grid[0]), float(grid[-1])) and grid.size > 1:
        warnings.warn(
            f"best net-gradient threshold {best_value:.4g} is at the end of the swept range "
            f"[{grid[0]:.4g}, {grid[-1]:.4g}]; widen the candidates",
            RuntimeWarning,
            stacklevel=2,
        )
    return best_value, best_metrics


def check_offset(
    camera: Camera | None = None,
    n_frames: int = 50,
    photons: float | None = None,
    background: float = 10.0,
    sigma_px: float = 1.2,
    size: int = 32,
    seed: int = 123,
    method: str = "gaussmle",
) -> dict:
    """Localize one isolated, bright emitter per frame at random sub-pixel positions.

    Returns the mean (bias) and largest absolute error along x and y in nm, which are a few nm
    at most when the pixel-centre to pixel-corner conversion is right (and half a pixel off
    otherwise). By default the emitter gets as many photons as keep its peak pixel at about half
    the uint16 range of the camera (at most 100,000), so nothing saturates.
    """
    from napari_smlm_diffusion.camera import preset
    from napari_smlm_diffusion.camera_noise import apply_camera_noise
    from napari_smlm_diffusion.psf import expected_image

    camera = preset("sCMOS") if camera is None else camera
    if photons is None:
        peak_fraction = 1.0 / (2.0 * np.pi * sigma_px**2)
        photons = min(100_000.0, 0.5 * 65535.0 / camera.adu_per_photon / peak_fraction)
    rng = np.random.default_rng(seed)
    centre = size / 2
    x_px = centre + rng.uniform(-1.0, 1.0, n_frames)
    y_px = centre + rng.uniform(-1.0, 1.0, n_frames)
    frames = np.stack(
        [
            apply_camera_noise(
                expected_image((size, size), x, y, photons, sigma_px, background), camera, rng
            )
            for x, y in zip(x_px, y_px, strict=True)
        ]
    )
    # A threshold well above the noise maxima and far below the emitter.
    locs = picasso_localize(frames, camera, 2_000.0 * camera.adu_per_photon, 7, method)
    if len(locs) != n_frames or not np.array_equal(locs["frame"], np.arange(n_frames)):
        raise RuntimeError(f"expected one localization per frame, got {len(locs)}")
    dx = locs["x_nm"].to_numpy() - x_px * camera.pixel_size
    dy = locs["y_nm"].to_numpy() - y_px * camera.pixel_size
    return {
        "n": int(n_frames),
        "photons": float(photons),
        "bias_x_nm": float(dx.mean()),
        "bias_y_nm": float(dy.mean()),
        "max_abs_x_nm": float(np.abs(dx).max()),
        "max_abs_y_nm": float(np.abs(dy).max()),
        "photon_ratio": float(np.median(locs["photons"].to_numpy() / photons)),
    }


if __name__ == "__main__":
    from napari_smlm_diffusion.camera import preset

    for name in ("sCMOS", "EMCCD"):
        for fit in FIT_METHODS:
            result = check_offset(preset(name, pixel_size=100.0), method=fit)
            print(f"{name:6s} {fit:16s} " + " ".join(f"{k}={v:.3g}" for k, v in result.items()))
