"""Property-based tests (hypothesis) of the package's conventions.

- coordinates -> KDE -> coordinates (kde.render_kde, kde.find_peaks),
- ADU <-> photons and camera validation (camera.Camera),
- ThunderSTORM CSV write -> read (io.write_localizations, io.read_localizations),
- layer alignment of upsampled layers for any scale and translate
  (geometry: napari-free, no viewer needed).

Example counts are modest (CI budget); every property is exact up to float rounding.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_smlm_diffusion.camera import Camera, CameraError
from napari_smlm_diffusion.geometry import nm_to_world, upsampled_geometry, world_to_nm
from napari_smlm_diffusion.io import read_localizations, write_localizations
from napari_smlm_diffusion.kde import find_peaks, render_kde

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(allow_nan=False, allow_infinity=False)


# ----------------------------------------------------------------------------- KDE round trip

# emitters sit in distinct 10x10 cells, jittered by up to 1.5 px: >= 7 px apart, so a neighbour's
# tail shifts a peak by < 1e-4 px (at 5 px apart, 8 px cells, it reached 3.4e-3 px)
CELL_PX = 10


@st.composite
def emitters(draw):
    """(x_px, y_px, heights, grid size) of well separated emitters on a KDE grid."""
    cells_per_side = draw(st.integers(2, 5))
    cells = draw(st.sets(st.tuples(st.integers(0, cells_per_side - 1),
                                   st.integers(0, cells_per_side - 1)), min_size=1, max_size=6))
    cells = sorted(cells)
    jitter = st.floats(-1.5, 1.5)
    x = np.array([(c + 0.5) * CELL_PX + draw(jitter) for c, _ in cells])
    y = np.array([(r + 0.5) * CELL_PX + draw(jitter) for _, r in cells])
    heights = np.array([draw(st.floats(0.7, 3.0)) for _ in cells])
    return x, y, heights, cells_per_side * CELL_PX


@FAST
@given(emitters(), st.floats(5.0, 50.0), st.floats(0.8, 1.2))
def test_kde_peaks_return_the_rendered_coordinates(points, pixel_nm, sigma_px):
    x_px, y_px, heights, size = points
    kde = render_kde(x_px * pixel_nm, y_px * pixel_nm, (size, size), pixel_nm, sigma_px,
                     weights=heights)
    found = find_peaks(kde, pixel_nm, threshold=0.3)
    assert len(found) == len(x_px)
    # emitters are >= 7 px apart: pair each with its nearest peak, which must be a permutation
    fx, fy = found.x_nm.to_numpy() / pixel_nm, found.y_nm.to_numpy() / pixel_nm
    order = np.hypot(fx[None, :] - x_px[:, None], fy[None, :] - y_px[:, None]).argmin(axis=1)
    assert sorted(order) == list(range(len(x_px)))
    # the log-parabola refinement is exact for a Gaussian: only float32 rounding remains
    np.testing.assert_allclose(fx[order], x_px, atol=2e-3)
    np.testing.assert_allclose(fy[order], y_px, atol=2e-3)
    # the score is the sampled peak: between the height and its value half a pixel off in x and y
    score, height = found.score.to_numpy()[order], heights
    assert np.all(score <= height * (1 + 1e-5))
    assert np.all(score >= height * math.exp(-0.25 / sigma_px**2) * (1 - 1e-5))


@FAST
@given(st.floats(0.0, 64.0), st.floats(0.0, 64.0), st.floats(1.0, 100.0))
def test_kde_of_one_point_peaks_in_the_pixel_that_contains_it(x_px, y_px, pixel_nm):
    """Pixel (r, c) covers [c, c+1) x [r, r+1): the maximum is in the pixel holding the point."""
    kde = render_kde([x_px * pixel_nm], [y_px * pixel_nm], (64, 64), pixel_nm)
    row, col = np.unravel_index(np.argmax(kde), kde.shape)
    assert abs(col + 0.5 - x_px) <= 0.5 + 1e-9 or x_px >= 64.0
    assert abs(row + 0.5 - y_px) <= 0.5 + 1e-9 or y_px >= 64.0


# ----------------------------------------------------------------------------- camera

cameras = st.builds(
    Camera,
    baseline=st.floats(-1000.0, 5000.0),
    sensitivity=st.floats(0.05, 50.0),
    em_gain=st.one_of(st.just(1.0), st.floats(1.0, 1000.0)),
    quantum_efficiency=st.floats(0.05, 1.0),
    read_noise=st.floats(0.0, 100.0),
    pixel_size=st.floats(20.0, 500.0),
)


@FAST
@given(cameras, st.lists(st.floats(0.0, 1e5), min_size=1, max_size=20))
def test_adu_photons_round_trip(camera, photons):
    photons = np.asarray(photons, dtype=np.float32)
    adu = camera.photons_to_adu(photons)
    back = camera.adu_to_photons(adu)
    eps = np.finfo(np.float32).eps
    tolerance = 8 * eps * (np.abs(photons) + abs(camera.baseline) / camera.adu_per_photon) + 1e-6
    assert np.all(np.abs(back - photons) <= tolerance)


@FAST
@given(cameras, st.floats(0.0, 65535.0))
def test_adu_to_photons_follows_the_documented_convention(camera, adu):
    expected = ((adu - camera.baseline) * camera.sensitivity / camera.em_gain
                / camera.quantum_efficiency)
    got = float(camera.adu_to_photons(adu))
    scale = (abs(adu) + abs(camera.baseline)) / camera.adu_per_photon
    assert got == pytest.approx(expected, abs=1e-5 * scale + 1e-6)


@FAST
@given(st.fixed_dictionaries({}, optional={
    "baseline": st.one_of(finite, st.just(math.nan), st.just(math.inf)),
    "sensitivity": st.one_of(finite, st.just(math.nan)),
    "em_gain": finite,
    "quantum_efficiency": finite,
    "read_noise": finite,
    "pixel_size": st.one_of(finite, st.just(-math.inf)),
}))
def test_camera_is_valid_or_refused_with_a_camera_error(values):
    try:
        camera = Camera(**values)
    except CameraError as error:  # never another exception type, always one line
        assert "\n" not in str(error) and "expected" in str(error)
        return
    assert camera.sensitivity > 0 and camera.em_gain >= 1 and camera.read_noise >= 0
    assert 0 < camera.quantum_efficiency <= 1 and camera.pixel_size > 0
    assert all(math.isfinite(v) for v in camera.to_dict().values())


# ----------------------------------------------------------------------------- CSV round trip

coordinate = st.floats(-1e6, 1e6, allow_nan=False)
value = st.one_of(st.floats(-1e9, 1e9, allow_nan=False), st.just(math.nan))


@st.composite
def tables(draw):
    n = draw(st.integers(0, 12))
    table = {
        "frame": draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n)),
        "x_nm": draw(st.lists(coordinate, min_size=n, max_size=n)),
        "y_nm": draw(st.lists(coordinate, min_size=n, max_size=n)),
    }
    for column in ("sigma_nm", "photons", "background", "bkgstd", "uncertainty_nm",
                   "uncertainty_x_nm", "uncertainty_y_nm", "detection_probability", "score"):
        if draw(st.booleans()):
            table[column] = draw(st.lists(value, min_size=n, max_size=n))
    return pd.DataFrame(table)


@settings(max_examples=50, deadline=None)
@given(tables())
def test_thunderstorm_csv_round_trip(table):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "locs.csv"
        write_localizations(path, table)
        header = path.read_text().splitlines()[0]
        back = read_localizations(path)
    assert header.startswith('"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]",'
                             '"offset [photon]","bkgstd [photon]","uncertainty [nm]"')
    assert len(back) == len(table)
    np.testing.assert_array_equal(back["frame"].to_numpy(), table["frame"].to_numpy())
    assert back["frame"].dtype == np.int64
    for column in table.columns.drop("frame"):
        np.testing.assert_array_equal(back[column].to_numpy(dtype=float),
                                      table[column].to_numpy(dtype=float))  # NaN == NaN here
    defaults = {"sigma_nm": 0.0, "background": 0.0, "bkgstd": 0.0, "photons": math.nan,
                "uncertainty_nm": math.nan}
    for column, default in defaults.items():
        if column not in table.columns and len(table):
            np.testing.assert_array_equal(back[column].to_numpy(), default)


# ----------------------------------------------------------------------------- layer alignment

positive = st.floats(1e-3, 1e4)
offset = st.floats(-1e5, 1e5)


@FAST
@given(st.lists(positive, min_size=2, max_size=4), st.data(), st.integers(1, 8))
def test_upsampled_layer_pixel_centres_land_on_the_raw_grid(scale, data, factor):
    translate = data.draw(st.lists(offset, min_size=len(scale), max_size=len(scale)))
    fine_scale, fine_translate = upsampled_geometry(tuple(scale), tuple(translate), factor)
    assert fine_scale[:-2] == tuple(scale[:-2]) and fine_translate[:-2] == tuple(translate[:-2])
    index = data.draw(st.integers(0, 4 * factor))  # any fine pixel along y and x
    for axis in (-2, -1):
        s, t = scale[axis], translate[axis]
        world = fine_translate[axis] + fine_scale[axis] * index  # napari: centre of data pixel
        # package convention: fine pixel i covers [i/u, (i+1)/u) raw pixels, centre (i+0.5)/u;
        # a raw layer puts raw position p (centre-origin) at t + s * p
        expected = t + s * ((index + 0.5) / factor - 0.5)
        assert world == pytest.approx(expected, rel=1e-9, abs=1e-9 * (abs(t) + s * factor))
        # the fine pixels tile the raw pixel exactly: same outer edges
        assert fine_translate[axis] - fine_scale[axis] / 2 == pytest.approx(
            t - s / 2, rel=1e-9, abs=1e-9 * (abs(t) + s))


@FAST
@given(positive, positive, offset, offset, st.floats(0.0, 1e5), st.floats(0.0, 1e5))
def test_nm_world_round_trip_and_agreement_with_the_upsampled_grid(sy, sx, ty, tx, y_nm, x_nm):
    scale, translate = (sy, sx), (ty, tx)
    wy, wx = nm_to_world(y_nm, x_nm, scale, translate)
    by, bx = world_to_nm(wy, wx, scale, translate)
    assert by == pytest.approx(y_nm, abs=1e-7 * (abs(ty) + y_nm + sy))
    assert bx == pytest.approx(x_nm, abs=1e-7 * (abs(tx) + x_nm + sx))
    # a localization at the centre of fine pixel i (4x grid) is drawn on that pixel's centre
    fine_scale, fine_translate = upsampled_geometry(scale, translate, 4)
    i = math.floor(x_nm / (sx / 4))
    centre_nm = (i + 0.5) * sx / 4
    _, world_x = nm_to_world(0.0, centre_nm, scale, translate)
    assert world_x == pytest.approx(fine_translate[1] + fine_scale[1] * i,
                                    abs=1e-7 * (abs(tx) + x_nm + sx))
