"""Drift correction by RCC on simulated localizations with a known smooth drift."""

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.io import TableError
from napari_smlm_diffusion.postprocess import synthetic
from napari_smlm_diffusion.postprocess.common import PostprocessError
from napari_smlm_diffusion.postprocess.drift import (
    apply_drift,
    estimate_drift,
    solve_shifts,
    sum_shifted_frames,
)
from napari_smlm_diffusion.postprocess.render import render_gaussians


def _residual_rms(estimated: np.ndarray, true: np.ndarray) -> float:
    error = estimated - true
    error -= error.mean(axis=0)  # a constant offset is a global translation, not drift
    return float(np.sqrt(np.mean(np.sum(error**2, axis=1))))


@pytest.fixture(scope="module")
def drifting():
    rng = np.random.default_rng(11)
    sites = synthetic.structure_sites(5000.0, rng, "rings")
    true = synthetic.smooth_drift(1000, 300.0, rng)
    table = synthetic.sample_sites(sites, 1000, 20, (10.0, 20.0), rng, true + 500.0)
    return table, true, sites


@pytest.mark.parametrize("refine", [False, True])
def test_residual_drift_below_5_nm(drifting, refine):
    table, true, _ = drifting
    assert np.ptp(true, axis=0).max() == pytest.approx(300.0)
    result = estimate_drift(table, refine=refine)
    assert result.drift_nm.shape == (1000, 2)
    assert np.allclose(result.drift_nm[0], 0.0)
    assert _residual_rms(result.drift_nm, true) <= 5.0
    # without correction the "residual" is the drift itself
    assert _residual_rms(np.zeros_like(true), true) > 50.0


def test_apply_drift_sharpens_the_structure(drifting):
    table, true, sites = drifting
    result = estimate_drift(table, window=50)
    assert len(result.window_frames) == 20
    corrected = apply_drift(table, result.drift_nm)
    assert list(corrected.columns) == list(table.columns)
    assert np.array_equal(corrected["frame"], table["frame"])
    truth = sites[table["site"]]

    def spread(t):  # distance of each localization to its true site, offset removed
        d = t[["x_nm", "y_nm"]].to_numpy() - truth
        return float(np.sqrt(np.mean(np.sum((d - d.mean(axis=0)) ** 2, axis=1))))

    noise = float(np.sqrt(2 * np.mean(table["uncertainty_nm"] ** 2)))
    assert spread(corrected) == pytest.approx(noise, rel=0.03)
    assert spread(table) > 4 * noise


def test_window_shift_solution_rejects_an_outlier_pair():
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 50, (6, 2))
    truth -= truth.mean(axis=0)
    pairs = np.array([(i, j) for i in range(6) for j in range(i + 1, 6)])
    shifts = truth[pairs[:, 1]] - truth[pairs[:, 0]] + rng.normal(0, 0.5, (len(pairs), 2))
    shifts[3] += 400.0  # a wrong correlation peak
    drift, keep = solve_shifts(pairs, shifts, 6, floor_nm=5.0)
    assert not keep[3] and keep.sum() == len(pairs) - 1
    assert np.abs(drift - truth).max() < 1.0


def test_sum_shifted_frames_undoes_the_drift():
    pixel = 20.0
    drift = np.column_stack([np.linspace(0, 90, 30), np.linspace(0, -60, 30)])
    frames = [render_gaussians(np.array([400.0]) + d[0], np.array([300.0]) + d[1], 30.0, 30.0,
                               pixel, (40, 40)) for d in drift]
    still = 30 * render_gaussians(np.array([400.0]), np.array([300.0]), 30.0, 30.0, pixel,
                                  (40, 40))
    blurred = np.sum(frames, axis=0)
    summed = sum_shifted_frames(iter(frames), drift, pixel)
    assert summed.sum() == pytest.approx(still.sum(), rel=1e-3)
    assert np.abs(summed - still).max() < 0.05 * still.max()
    assert np.abs(blurred - still).max() > 0.3 * still.max()
    with pytest.raises(PostprocessError, match="covers 30 frames"):
        sum_shifted_frames(iter(frames), drift, pixel, first_frame=5)


def test_single_frame_is_refused():
    table = pd.DataFrame({"frame": [3] * 50, "x_nm": np.arange(50.0), "y_nm": np.arange(50.0)})
    with pytest.raises(PostprocessError, match="several frames; all 50 are in frame 4"):
        estimate_drift(table)


def test_too_long_window_is_refused(drifting):
    table, _, _ = drifting
    with pytest.raises(PostprocessError, match="at least 2 time windows.*smaller --window"):
        estimate_drift(table, window=5000)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pd.DataFrame({"frame": [0, 1], "x_nm": [1.0, 2.0]}), "needs the column.*y_nm"),
        (pd.DataFrame({"frame": [], "x_nm": [], "y_nm": []}), "table is empty"),
        (pd.DataFrame({"frame": [0, 1, 2], "x_nm": [1.0, np.nan, 3.0], "y_nm": [1.0, 2, 3]}),
         "'x_nm' holds 1 NaN"),
    ],
)
def test_bad_tables_are_refused(table, message):
    with pytest.raises(TableError, match=message):
        estimate_drift(table)


def test_too_many_windows_are_refused(drifting):
    table, _, _ = drifting
    with pytest.raises(PostprocessError, match="give 200 windows.*--window 10 or more"):
        estimate_drift(table, window=5)


def test_cancel_stops_the_estimation(drifting):
    table, _, _ = drifting
    with pytest.raises(InterruptedError):
        estimate_drift(table, should_stop=lambda: True)
