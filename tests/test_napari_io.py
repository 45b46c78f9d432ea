"""napari contributions: sample data, reader and writers, with layers aligned in world space."""

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion._napari.reader import get_reader
from napari_smlm_diffusion._napari.sample_data import make_sample_data
from napari_smlm_diffusion._napari.writer import table_from_points, write_points_csv
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.geometry import nm_to_world, upsampled_geometry, world_to_nm
from napari_smlm_diffusion.io import read_localizations, write_localizations, write_tiff
from napari_smlm_diffusion.kde import find_peaks, render_kde
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack


def test_upsampled_layer_lies_over_raw_pixels():
    scale, translate = (1.0, 100.0, 100.0), (0.0, 30.0, -20.0)
    fine_scale, fine_translate = upsampled_geometry(scale, translate, 4)
    assert fine_scale == (1.0, 25.0, 25.0)
    # the outer edge of raw pixel 0 (world t - s/2) equals the outer edge of fine pixel 0
    raw_edge = np.array(translate[1:]) - np.array(scale[1:]) / 2
    fine_edge = np.array(fine_translate[1:]) - np.array(fine_scale[1:]) / 2
    np.testing.assert_allclose(raw_edge, fine_edge)


def test_nm_world_round_trip():
    y, x = np.array([0.0, 150.0]), np.array([50.0, 999.0])
    scale, translate = (1.0, 100.0, 80.0), (0.0, 5.0, 7.0)
    wy, wx = nm_to_world(y, x, scale, translate)
    assert wx[0] == pytest.approx(7.0 + 50.0 - 40.0)
    back_y, back_x = world_to_nm(wy, wx, scale, translate)
    np.testing.assert_allclose(back_y, y)
    np.testing.assert_allclose(back_x, x)


def test_one_emitter_end_to_end_convention(tmp_path, make_napari_viewer):
    """Simulate one emitter, write/read the truth, render its KDE, detect it, and find it at the
    PSF centre of the raw layer in world coordinates."""
    camera = preset("sCMOS")
    config = SimulationConfig(size=(16, 16), density=0.0, background=1.0, camera=camera)
    x_true, y_true = 523.0, 871.0  # nm: inside raw pixel (8, 5)
    from napari_smlm_diffusion.psf import expected_image

    expected = expected_image((16, 16), [x_true / 100], [y_true / 100], [50000.0], 1.0, 1.0)
    frame = camera.photons_to_adu(expected).astype(np.uint16)
    stack_path = tmp_path / "one.tif"
    write_tiff(stack_path, frame[None], pixel_size_nm=100.0)
    truth = pd.DataFrame({"frame": [0], "x_nm": [x_true], "y_nm": [y_true]})
    write_localizations(tmp_path / "truth.csv", truth)
    read_back = read_localizations(tmp_path / "truth.csv")
    kde = render_kde(read_back.x_nm, read_back.y_nm, config.kde_shape, config.fine_pixel_nm)
    peak = find_peaks(kde, config.fine_pixel_nm)
    assert peak.x_nm[0] == pytest.approx(x_true, abs=1) and peak.y_nm[0] == pytest.approx(
        y_true, abs=1)

    viewer = make_napari_viewer()
    viewer.open(str(stack_path), plugin="napari-smlm-diffusion")
    raw = viewer.layers[0]
    fine_scale, fine_translate = upsampled_geometry(raw.scale, raw.translate, 4)
    kde_layer = viewer.add_image(kde[None], scale=fine_scale, translate=fine_translate)
    from napari_smlm_diffusion._napari.layers import points_from_table

    coords, _ = points_from_table(peak, tuple(raw.scale), tuple(raw.translate))
    points = viewer.add_points(coords)
    # PSF centre of the raw layer in world coordinates (intensity-weighted centroid)
    data = camera.adu_to_photons(raw.data[0]) - 1.0
    rows, cols = np.indices(data.shape)
    centroid = np.array([(rows * data).sum(), (cols * data).sum()]) / data.sum()
    raw_world = np.asarray(raw.data_to_world([0, *centroid]))[1:]
    kde_world = np.asarray(kde_layer.data_to_world([0, *np.unravel_index(kde.argmax(),
                                                                         kde.shape)]))[1:]
    np.testing.assert_allclose(points.data[0, 1:], raw_world, atol=2.0)
    np.testing.assert_allclose(kde_world, raw_world, atol=fine_scale[-1] / 2 + 2.0)


def test_sample_data_layers_are_aligned(make_napari_viewer):
    viewer = make_napari_viewer()
    for data, attributes, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **attributes)
    image, points = viewer.layers
    assert image.data.shape == (100, 64, 64)
    assert tuple(image.scale) == (1.0, 100.0, 100.0)
    # the brightest raw pixel of frame 0 lies within one pixel of a true emitter (world coords)
    frame0 = points.data[points.data[:, 0] == 0]
    bright = np.unravel_index(np.asarray(image.data[0]).argmax(), image.data.shape[1:])
    bright_world = np.asarray(image.data_to_world([0, *bright]))[1:]
    distances = np.hypot(*(frame0[:, 1:] - bright_world).T)
    assert distances.min() < 100.0


def test_reader_opens_tiff_lazily_with_scale(tmp_path):
    stack = simulate_stack(4, SimulationConfig(size=(20, 24)), seed=0)
    path = tmp_path / "stack.tif"
    write_tiff(path, stack.frames, pixel_size_nm=108.0)
    reader = get_reader(str(path))
    assert reader is not None and get_reader(str(tmp_path / "x.csv")) is None
    (data, attributes, kind), = reader(str(path))
    assert kind == "image" and data.shape == (4, 20, 24)
    assert attributes["scale"] == (1.0, 108.0, 108.0)
    np.testing.assert_array_equal(np.asarray(data[2]), stack.frames[2])


def test_points_writer_round_trip(tmp_path):
    scale, translate = (1.0, 100.0, 100.0), (0.0, 0.0, 0.0)
    table = pd.DataFrame({"frame": [0, 3], "x_nm": [120.0, 3000.5], "y_nm": [40.0, 10.0],
                          "photons": [1000.0, 2500.0]})
    from napari_smlm_diffusion._napari.layers import points_from_table

    coords, features = points_from_table(table, scale, translate)
    attributes = {"features": features, "metadata": {"raw_scale": scale,
                                                     "raw_translate": translate}}
    path = str(tmp_path / "locs.csv")
    write_points_csv(path, coords, attributes)
    back = read_localizations(path)
    np.testing.assert_allclose(back[["x_nm", "y_nm", "photons"]], table[["x_nm", "y_nm",
                                                                         "photons"]])
    assert list(back.frame) == [0, 3]
    assert table_from_points(coords, attributes)["frame"].tolist() == [0, 3]
