"""Uncertainty annotation core: thresholded regions, drawn regions, per-region statistics."""

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.annotate import (
    DRAWN,
    THRESHOLD,
    add_drawn_regions,
    ellipse_polygon,
    grid_positions,
    polygon_mask,
    region_statistics,
    threshold_regions,
    write_region_table,
)

PIXEL = 25.0  # nm: the 4x grid of 100 nm camera pixels


def small_std():
    """6 x 8 std map: a 4-pixel region (one pixel joined diagonally), a 1-pixel region and a
    pixel just below the threshold of 0.6."""
    std = np.zeros((6, 8))
    std[1, 1], std[1, 2], std[2, 2], std[3, 3] = 1.0, 2.0, 3.0, 0.9
    std[4, 6] = 2.5
    std[4, 4] = 0.5
    return std


def test_threshold_regions_are_8_connected_and_small_ones_can_be_dropped():
    labels = threshold_regions(small_std(), 0.6)
    assert labels.dtype == np.int32 and labels.max() == 2
    np.testing.assert_array_equal(np.argwhere(labels == 1), [[1, 1], [1, 2], [2, 2], [3, 3]])
    np.testing.assert_array_equal(np.argwhere(labels == 2), [[4, 6]])
    assert labels[4, 4] == 0
    dropped = threshold_regions(small_std(), 0.6, min_area_px=2)
    np.testing.assert_array_equal(dropped, np.where(labels == 1, 1, 0))
    assert threshold_regions(small_std(), 5.0).max() == 0


def test_threshold_regions_never_connect_frames_and_ignore_nan():
    std = np.stack([small_std(), small_std()])
    std[1, 0, 0] = np.nan
    labels = threshold_regions(std, 0.6)
    assert labels.max() == 4  # the same two regions in each frame, numbered frame by frame
    assert set(np.unique(labels[0])) == {0, 1, 2} and set(np.unique(labels[1])) == {0, 3, 4}
    with pytest.raises(ValueError, match="expected a std map"):
        threshold_regions(np.zeros(5), 0.1)


def test_region_statistics_against_hand_computed_values():
    std = small_std()
    labels = threshold_regions(std, 0.6)
    table = pd.DataFrame({
        "frame": [0, 0, 0, 0, 0],
        # region 1 at pixels (1, 1) and (2, 2); NaN uncertainty in region 1; region 2; outside
        "y_nm": [1.5 * PIXEL, 2.2 * PIXEL, 1.9 * PIXEL, 4.5 * PIXEL, 5.5 * PIXEL],
        "x_nm": [1.5 * PIXEL, 2.9 * PIXEL, 2.1 * PIXEL, 6.5 * PIXEL, 0.5 * PIXEL],
        "uncertainty_nm": [10.0, 20.0, np.nan, np.nan, 99.0],
    })
    positions = grid_positions(table, PIXEL)
    stats = region_statistics(labels, std, PIXEL, positions, table["uncertainty_nm"])
    assert list(stats["region"]) == [1, 2] and list(stats["source"]) == [THRESHOLD] * 2
    assert stats["frame"].isna().all()  # 2D labels: the regions hold for every frame
    np.testing.assert_allclose(stats["area_um2"], [4 * 0.025**2, 0.025**2])
    np.testing.assert_allclose(stats["mean_std"], [(1.0 + 2.0 + 3.0 + 0.9) / 4, 2.5])
    np.testing.assert_allclose(stats["max_std"], [3.0, 2.5])
    assert list(stats["localizations"]) == [3, 1]
    np.testing.assert_allclose(stats["median_uncertainty_nm"], [15.0, np.nan])
    # centroid of region 1: mean row 1.75, mean col 2.0 -> centres at +0.5 pixel
    np.testing.assert_allclose(stats[["y_nm", "x_nm"]].to_numpy(),
                               [[2.25 * PIXEL, 2.5 * PIXEL], [4.5 * PIXEL, 6.5 * PIXEL]])


def test_region_statistics_per_frame_counts_only_that_frames_localizations():
    std = np.stack([small_std(), small_std()])
    labels = threshold_regions(std, 0.6, min_area_px=2)  # region 1 in frame 0, 2 in frame 1
    table = pd.DataFrame({"frame": [7, 8, 8, 9], "y_nm": [1.5 * PIXEL] * 4,
                          "x_nm": [1.5 * PIXEL] * 4, "uncertainty_nm": [4.0, 6.0, 8.0, 1.0]})
    positions = grid_positions(table, PIXEL, first_frame=7)  # labels start at stack frame 7
    stats = region_statistics(labels, std, PIXEL, positions, table["uncertainty_nm"],
                              first_frame=7)
    assert list(stats["frame"]) == [7, 8]
    assert list(stats["localizations"]) == [1, 2]
    np.testing.assert_allclose(stats["median_uncertainty_nm"], [4.0, 7.0])
    with pytest.raises(ValueError, match="frame coordinate is needed"):
        region_statistics(labels, std, PIXEL, grid_positions(table, PIXEL))


def test_region_statistics_of_no_region_is_an_empty_table():
    stats = region_statistics(np.zeros((4, 4), int), np.ones((4, 4)), PIXEL)
    assert stats.empty and "median_uncertainty_nm" in stats.columns
    with pytest.raises(ValueError, match="differ in shape"):
        region_statistics(np.zeros((4, 4), int), np.ones((4, 5)), PIXEL)


def test_polygon_and_ellipse_masks_take_pixels_whose_centre_is_inside():
    square = [[0.5, 0.5], [0.5, 3.5], [3.5, 3.5], [3.5, 0.5]]
    mask = polygon_mask(np.array(square), (6, 6))
    np.testing.assert_array_equal(np.argwhere(mask)[[0, -1]], [[1, 1], [3, 3]])
    assert mask.sum() == 9
    triangle = polygon_mask(np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0]]) - 0.5, (20, 20))
    assert triangle.sum() == 45  # hypotenuse r + c = 9: centres with r + c <= 8: 9 + 8 + ... + 1
    assert polygon_mask(np.array([[30.0, 30], [30, 40], [40, 40]]), (6, 6)).sum() == 0
    # napari stores an ellipse as the 4 corners of its box: a circle of radius 2.5 around (2, 2)
    circle = ellipse_polygon(np.array([[-0.5, -0.5], [-0.5, 4.5], [4.5, 4.5], [4.5, -0.5]]))
    inside = polygon_mask(circle, (5, 5))
    r, c = np.mgrid[:5, :5]
    np.testing.assert_array_equal(inside, (r - 2) ** 2 + (c - 2) ** 2 <= 5)  # 21 pixels


def test_drawn_regions_are_burned_in_after_the_thresholded_ones():
    labels = np.zeros((2, 6, 6), np.int32)
    labels[0, 0:2, 0:2] = 1
    labels[1, 4:6, 4:6] = 2
    covers_1 = np.zeros((6, 6), bool)
    covers_1[0:3, 0:3] = True
    corner = np.zeros((6, 6), bool)
    corner[5, 0] = True
    combined, sources = add_drawn_regions(labels, [(0, covers_1), (None, corner),
                                                   (1, np.zeros((6, 6), bool))])
    assert labels[0, 0, 0] == 1  # the input is not changed
    assert (combined[0, 0:3, 0:3] == 3).all() and combined[1, 4, 4] == 2
    assert combined[0, 5, 0] == 4 and combined[1, 5, 0] == 5  # no frame: one region per frame
    assert sources == {2: THRESHOLD, 3: DRAWN, 4: DRAWN, 5: DRAWN}  # 1 was fully covered


def test_region_table_csv_has_quoted_header_and_frames_from_1(tmp_path):
    std = np.stack([small_std()])
    stats = region_statistics(threshold_regions(std, 0.6), std, PIXEL, first_frame=4)
    path = write_region_table(tmp_path / "regions.csv", stats)
    header = path.read_text().splitlines()[0]
    assert header.startswith('"region","source","frame","area [um^2]","mean std"')
    back = pd.read_csv(path)
    assert list(back["frame"]) == [5, 5] and list(back["localizations"]) == [0, 0]
    np.testing.assert_allclose(back["max std"], [3.0, 2.5])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary file left
