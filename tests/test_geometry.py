"""The package's geometry convention (geometry.py), pinned with hand-computed numbers.

Pixel (r, c) covers [c, c+1) x [r, r+1) in pixel units (origin: top-left corner of the top-left
pixel); data coordinates (napari, array indices) put the centre of pixel i at i; the fine grid is
UPSAMPLING times finer with the same origin; frames are 0-based inside and 1-based for users.
"""

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.annotate import region_statistics
from napari_smlm_diffusion.geometry import (
    DEFAULT_PSF_SIGMA_PX,
    FIRST_FRAME_KEY,
    UPSAMPLING,
    camera_to_fine_px,
    check_frame_range,
    data_coordinate,
    default_psf_sigma_nm,
    fine_pixel_nm,
    fine_shape,
    fine_to_camera_px,
    format_frame_range,
    frame_metadata,
    from_user_frame,
    nm_to_px,
    nm_to_world,
    parse_frame_range,
    pixel_centre,
    psf_sigma_or_default,
    px_to_nm,
    to_user_frame,
    upsampled_geometry,
    world_to_nm,
)
from napari_smlm_diffusion.kde import find_peaks, render_kde
from napari_smlm_diffusion.models.kde_cnn import KdeCnn


def test_pixel_covers_its_unit_square_and_its_centre_is_at_half():
    assert UPSAMPLING == 4 == KdeCnn.upsampling
    assert pixel_centre(0) == 0.5 and pixel_centre(3) == 3.5
    assert data_coordinate(3.5) == 3.0
    # pixel c covers [c, c+1): its centre maps to data coordinate c, its edges to c -+ 0.5
    for c in range(5):
        assert data_coordinate(pixel_centre(c)) == c
        assert data_coordinate(c) == c - 0.5 and data_coordinate(c + 1) == c + 0.5
    np.testing.assert_array_equal(pixel_centre(np.arange(3)), [0.5, 1.5, 2.5])


def test_nm_camera_fine_round_trips():
    pixel = 100.0
    nm = np.array([0.0, 12.5, 50.0, 399.9, 1234.5])
    px = nm_to_px(nm, pixel)
    np.testing.assert_allclose(px, [0.0, 0.125, 0.5, 3.999, 12.345])
    np.testing.assert_allclose(px_to_nm(px, pixel), nm)
    fine = camera_to_fine_px(px)
    np.testing.assert_allclose(fine, px * 4)
    np.testing.assert_allclose(fine_to_camera_px(fine), px)
    # the same nm on the fine grid directly
    np.testing.assert_allclose(nm_to_px(nm, fine_pixel_nm(pixel)), fine)
    assert fine_pixel_nm(100.0) == 25.0 and fine_pixel_nm(160.0, 2) == 80.0
    assert fine_shape((7, 10, 12)) == (7, 40, 48)
    # the centre of camera pixel 2 is the corner shared by fine pixels 9 and 10 (4x grid)
    assert camera_to_fine_px(pixel_centre(2)) == 10.0


def test_default_psf_width():
    assert DEFAULT_PSF_SIGMA_PX == 1.2
    assert default_psf_sigma_nm(100.0) == pytest.approx(120.0)
    assert psf_sigma_or_default(None, 160.0) == pytest.approx(192.0)
    assert psf_sigma_or_default(135.0, 160.0) == 135.0


def test_kde_peaks_follow_the_convention():
    """A kernel at the centre of fine pixel (2, 5) peaks on that pixel and is found there."""
    pixel = 25.0
    x_nm, y_nm = pixel_centre(5) * pixel, pixel_centre(2) * pixel  # 137.5, 62.5 nm
    kde = render_kde([x_nm], [y_nm], (8, 10), pixel)
    assert np.unravel_index(np.argmax(kde), kde.shape) == (2, 5)
    peaks = find_peaks(kde, pixel, threshold=0.5)
    np.testing.assert_allclose(peaks[["x_nm", "y_nm"]].to_numpy(), [[137.5, 62.5]], atol=1e-6)


def test_region_centroid_is_in_nm_from_the_grid_origin():
    labels = np.zeros((4, 6), dtype=np.int32)
    labels[1, 2:4] = 1  # pixels (1, 2) and (1, 3): centres (2.5, 1.5) and (3.5, 1.5) px
    stats = region_statistics(labels, np.ones((4, 6)), 10.0)
    assert stats["x_nm"].iloc[0] == pytest.approx(30.0)
    assert stats["y_nm"].iloc[0] == pytest.approx(15.0)


def test_upsampled_layer_lies_over_the_raw_pixels():
    """Raw layer: scale 100 nm, translate (10, -20). The 4x layer has scale 25 and translate
    t + 100 (1/8 - 1/2) = t - 37.5; its first fine pixel's outer edge is the raw pixel's."""
    scale, translate = upsampled_geometry((1.0, 100.0, 100.0), (0.0, 10.0, -20.0), 4)
    assert scale == (1.0, 25.0, 25.0)
    assert translate == pytest.approx((0.0, -27.5, -57.5))
    assert translate[1] - scale[1] / 2 == pytest.approx(10.0 - 50.0)
    # a localization at 62.5 nm (centre of fine pixel 2) is drawn on fine pixel 2's centre
    wy, wx = nm_to_world(np.array([62.5]), np.array([137.5]), (100.0, 100.0), (10.0, -20.0))
    assert wy[0] == pytest.approx(translate[1] + scale[1] * 2)
    assert wx[0] == pytest.approx(translate[2] + scale[2] * 5)
    by, bx = world_to_nm(wy, wx, (100.0, 100.0), (10.0, -20.0))
    assert by[0] == pytest.approx(62.5) and bx[0] == pytest.approx(137.5)
    # the raw pixel (0, 0) centre is at the translate; its corner (0 nm) half a pixel before
    assert nm_to_world(50.0, 50.0, (100.0, 100.0), (10.0, -20.0)) == pytest.approx((10.0, -20.0))
    assert nm_to_world(0.0, 0.0, (100.0, 100.0), (10.0, -20.0)) == pytest.approx((-40.0, -70.0))


def test_frames_are_one_based_for_users():
    assert to_user_frame(0) == 1 and from_user_frame(1) == 0
    np.testing.assert_array_equal(to_user_frame(np.array([0, 4])), [1, 5])
    assert list(to_user_frame(pd.array([0, pd.NA], dtype="Int64"))) == [1, pd.NA]
    assert parse_frame_range("2-4", 10) == range(1, 4)
    assert parse_frame_range("2:4", 10) == range(1, 4)
    assert parse_frame_range("3", 10) == range(2, 3)
    assert parse_frame_range("3-", 10) == range(2, 10)
    assert parse_frame_range(None, 7) == parse_frame_range("all", 7) == range(7)
    assert format_frame_range(range(1, 4)) == "2-4"
    assert format_frame_range(range(4, 5)) == "5-5"
    for text in ("1-1", "2-9", "10-10"):
        assert format_frame_range(parse_frame_range(text, 10)) == text
    assert frame_metadata(range(2, 6)) == {"frames": "3-6", FIRST_FRAME_KEY: 2}


@pytest.mark.parametrize(("text", "message"), [
    ("abc", "expected A-B with 1 <= A <= B"),
    ("5-2", "the first frame comes after the last"),
    ("0-3", "lie outside the stack: it has frames 1-10"),
    ("8-11", "lie outside the stack: it has frames 1-10"),
    ("1-2-3", "lie outside the stack"),
])
def test_bad_frame_ranges_say_what_is_expected(text, message):
    with pytest.raises(ValueError, match=message):
        parse_frame_range(text, 10)


def test_frame_range_checks_and_formatting_errors():
    check_frame_range(range(0, 10, 3), 10)
    with pytest.raises(ValueError, match="frames 9-11 lie outside the stack: it has frames 1-10"):
        check_frame_range(range(8, 11), 10)
    with pytest.raises(ValueError, match="consecutive"):
        format_frame_range(range(0, 8, 2))
    with pytest.raises(ValueError, match="consecutive"):
        format_frame_range(range(0))
