"""Merging blinks: linking over consecutive frames, 1/sigma^2-weighted positions."""

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.io import TableError
from napari_smlm_diffusion.postprocess import synthetic
from napari_smlm_diffusion.postprocess.common import PostprocessError
from napari_smlm_diffusion.postprocess.merge import merge_blinks


@pytest.fixture(scope="module")
def blinks():
    rng = np.random.default_rng(5)
    return synthetic.simulate_blinks(3000, 2000, 20_000.0, 4.0, (8.0, 20.0), rng)


def test_merge_recovers_the_molecules(blinks):
    table = blinks.drop(columns=["molecule", "true_x_nm", "true_y_nm"])
    merged = merge_blinks(table, radius_nm=100.0, gap=0)
    assert len(table) > 3.5 * 3000
    assert len(merged) == pytest.approx(3000, rel=0.01)
    assert merged["frames_on"].sum() == len(table)
    assert merged["photons"].sum() == pytest.approx(table["photons"].sum())
    assert (merged["last_frame"] - merged["frame"] + 1 >= merged["frames_on"]).all()


def test_merged_positions_are_weighted_and_calibrated(blinks):
    merged = merge_blinks(blinks.drop(columns=["true_x_nm", "true_y_nm"]), 100.0, 0)
    # each merged row is one true molecule (its averaged label is a whole number)
    pure = merged["molecule"] == np.round(merged["molecule"])
    assert pure.mean() > 0.99
    merged = merged[pure]
    truth = blinks.groupby("molecule")[["true_x_nm", "true_y_nm"]].first()
    ids = merged["molecule"].astype(int)
    dx = merged["x_nm"].to_numpy() - truth.loc[ids, "true_x_nm"].to_numpy()
    dy = merged["y_nm"].to_numpy() - truth.loc[ids, "true_y_nm"].to_numpy()
    # the combined uncertainty predicts the error: RMS of error/sigma about 1 per axis
    assert np.sqrt(np.mean((dx / merged["uncertainty_x_nm"]) ** 2)) == pytest.approx(1.0, abs=0.05)
    assert np.sqrt(np.mean((dy / merged["uncertainty_y_nm"]) ** 2)) == pytest.approx(1.0, abs=0.05)
    # and merged molecules are more precise than single detections
    single = blinks["x_nm"] - blinks["true_x_nm"]
    assert np.sqrt(np.mean(dx**2)) < 0.7 * np.sqrt(np.mean(single**2))


def test_weighted_mean_sigma_photons_and_gap():
    table = pd.DataFrame({
        "frame": [4, 5, 6, 9, 20],
        "x_nm": [100.0, 110.0, 130.0, 105.0, 5000.0],
        "y_nm": [200.0, 190.0, 200.0, 200.0, 5000.0],
        "uncertainty_nm": [10.0, 20.0, 20.0, 10.0, 15.0],
        "photons": [1000.0, 500.0, 400.0, 900.0, 300.0],
    })
    merged = merge_blinks(table, radius_nm=50.0, gap=1)  # frame 9 is 3 frames after 6: apart
    assert len(merged) == 3
    first = merged.iloc[0]
    w = np.array([1 / 100, 1 / 400, 1 / 400])
    assert first["x_nm"] == pytest.approx(np.sum(w * [100, 110, 130]) / w.sum())
    assert first["y_nm"] == pytest.approx(np.sum(w * [200, 190, 200]) / w.sum())
    assert first["uncertainty_x_nm"] == pytest.approx(1 / np.sqrt(w.sum()))
    assert first["uncertainty_nm"] == pytest.approx(1 / np.sqrt(w.sum()))
    assert (first["frame"], first["last_frame"], first["frames_on"]) == (4, 6, 3)
    assert first["photons"] == pytest.approx(1900.0)
    linked = merge_blinks(table, radius_nm=50.0, gap=2)
    assert len(linked) == 2 and linked.iloc[0]["frames_on"] == 4


def test_close_molecules_in_the_same_frames_stay_apart():
    frames = np.repeat(np.arange(5), 2)
    x = np.tile([0.0, 60.0], 5) + 1000
    table = pd.DataFrame({"frame": frames, "x_nm": x, "y_nm": np.full(10, 1000.0)})
    merged = merge_blinks(table, radius_nm=50.0, gap=0)
    assert sorted(merged["x_nm"]) == pytest.approx([1000.0, 1060.0])
    assert (merged["frames_on"] == 5).all()


def test_without_uncertainties_positions_are_plain_means():
    table = pd.DataFrame({"frame": [0, 1], "x_nm": [0.0, 10.0], "y_nm": [5.0, 7.0]})
    merged = merge_blinks(table, 50.0, 0)
    assert merged[["x_nm", "y_nm"]].to_numpy().tolist() == [[5.0, 6.0]]
    assert "uncertainty_nm" not in merged


@pytest.mark.parametrize(
    ("table", "kwargs", "error", "message"),
    [
        (pd.DataFrame({"x_nm": [1.0], "y_nm": [1.0]}), {}, TableError, "needs the column"),
        (pd.DataFrame({"frame": [], "x_nm": [], "y_nm": []}), {}, TableError, "empty"),
        (pd.DataFrame({"frame": [0], "x_nm": [np.nan], "y_nm": [1.0]}), {}, TableError, "NaN"),
        (pd.DataFrame({"frame": [0], "x_nm": [1.0], "y_nm": [1.0]}), {"radius_nm": -1},
         PostprocessError, "radius must be a positive"),
        (pd.DataFrame({"frame": [0, 1], "x_nm": [1.0, 1], "y_nm": [1.0, 1],
                       "uncertainty_nm": [5.0, 0.0]}), {}, PostprocessError, "positive and finite"),
    ],
)
def test_bad_input(table, kwargs, error, message):
    with pytest.raises(error, match=message):
        merge_blinks(table, **kwargs)
