"""Post-processing widget: the drift curve of a Points layer applied to an image layer of
per-frame maps ("Apply drift to image layer"): shifted frames summed, aligned with the source."""

import numpy as np
import pytest
from scipy.ndimage import shift

from napari_smlm_diffusion._napari.layers import points_from_table
from napari_smlm_diffusion._napari.widgets.layer_choice import OUTPUT_KEY
from napari_smlm_diffusion._napari.widgets.postprocess_widget import PostprocessWidget
from napari_smlm_diffusion.geometry import FIRST_FRAME_KEY
from napari_smlm_diffusion.postprocess import synthetic
from napari_smlm_diffusion.postprocess.render import render_gaussians

pytestmark = pytest.mark.gui

PIXEL, FINE = 100.0, 25.0  # camera and 4x-grid pixels, nm
FIRST, N_MAPS, N_FRAMES = 100, 200, 600  # the maps are frames 101-300 of 600
SHAPE = (184, 184)
TIMEOUT_MS = 60_000
NAME = "KDE drift-corrected sum"


@pytest.fixture(scope="module")
def acquisition():
    """Localizations with a smooth drift of about 200 nm, per-frame maps of frames 100-299
    rendered from them, and the sum of the same maps rendered without drift (the truth)."""
    rng = np.random.default_rng(31)
    sites = synthetic.structure_sites(4000.0, rng, "rings")
    true = synthetic.smooth_drift(N_FRAMES, 200.0, rng)
    table = synthetic.sample_sites(sites, N_FRAMES, 30, (10.0, 20.0), rng, true + 300.0)
    maps = np.zeros((N_MAPS, *SHAPE), np.float32)
    still = np.zeros(SHAPE)
    for k in range(N_MAPS):
        rows = table[table["frame"] == FIRST + k]
        x, y = rows["x_nm"].to_numpy(), rows["y_nm"].to_numpy()
        maps[k] = render_gaussians(x, y, 30.0, 30.0, FINE, SHAPE)
        drift = true[FIRST + k]
        still += render_gaussians(x - drift[0], y - drift[1], 30.0, 30.0, FINE, SHAPE)
    return table, true, maps, still


@pytest.fixture
def widget(make_napari_viewer, acquisition):
    viewer = make_napari_viewer()
    table, _, maps, _ = acquisition
    scale, translate = (1.0, PIXEL, PIXEL), (0.0, 0.0, 0.0)
    coords, features = points_from_table(table, scale, translate)
    viewer.add_points(coords, features=features, name="locs", size=30.0,
                      metadata={"raw_scale": scale, "raw_translate": translate,
                                "pixel_size_nm": PIXEL})
    # the 4x grid over a raw layer of scale 100 nm: scale 25, translate 100 * (1/8 - 1/2)
    viewer.add_image(maps, name="KDE", scale=(1.0, FINE, FINE),
                     translate=(float(FIRST), -37.5, -37.5),
                     metadata={FIRST_FRAME_KEY: FIRST, "pixel_size_nm": FINE, OUTPUT_KEY: "kde"})
    widget = PostprocessWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.images.value.name == "KDE"
    return viewer, widget


def run(qtbot, widget, what):
    widget.start(what)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def test_zero_drift_is_the_plain_sum_and_the_layer_is_aligned(qtbot, widget, acquisition):
    viewer, w = widget
    maps = acquisition[2]
    w.drift_curve = (np.zeros((N_FRAMES, 2)), "locs")
    run(qtbot, w, "drift image")
    layer = viewer.layers[NAME]
    np.testing.assert_allclose(layer.data, maps.astype(np.float64).sum(0), rtol=1e-6,
                               atol=1e-6 * maps.sum(0).max())
    assert tuple(layer.scale) == (FINE, FINE)
    assert tuple(layer.translate) == (-37.5, -37.5)
    assert layer.metadata["pixel_size_nm"] == FINE
    assert layer.metadata["drift_corrected_with"] == "locs"
    assert "added" in w.status.value
    run(qtbot, w, "drift image")  # a re-run replaces the layer in place
    assert [layer.name for layer in viewer.layers].count(NAME) == 1


def test_constant_drift_is_the_shifted_sum_also_for_std_maps(qtbot, widget, acquisition):
    viewer, w = widget
    maps = acquisition[2].astype(np.float64)
    w.drift_curve = (np.tile([2 * FINE, -1 * FINE], (N_FRAMES, 1)), "locs")
    run(qtbot, w, "drift image")
    inner = (slice(4, -4), slice(4, -4))
    expected = shift(maps.sum(0), (1, -2), order=3, mode="constant")
    scale = expected.max()
    np.testing.assert_allclose(viewer.layers[NAME].data[inner], expected[inner], rtol=1e-5,
                               atol=1e-5 * scale)
    # a per-frame std layer: sqrt of the sum of the shifted variances
    viewer.add_image(np.sqrt(maps[:20]), name="Posterior std", scale=(1.0, FINE, FINE),
                     metadata={FIRST_FRAME_KEY: FIRST, "pixel_size_nm": FINE,
                               OUTPUT_KEY: "posterior_std"})
    w.images.value = viewer.layers["Posterior std"]
    run(qtbot, w, "drift image")
    expected = shift(maps[:20].sum(0), (1, -2), order=3, mode="constant")
    np.testing.assert_allclose(viewer.layers["Posterior std drift-corrected sum"].data[inner]
                               ** 2, expected[inner], rtol=1e-4, atol=1e-5 * expected.max())


def test_drift_of_the_points_then_applied_to_the_maps(qtbot, widget, acquisition):
    viewer, w = widget
    maps, still = acquisition[2], acquisition[3]
    assert not w.apply_button.enabled  # no drift curve yet
    w.window.value = 30
    run(qtbot, w, "drift")
    assert w.apply_button.enabled
    run(qtbot, w, "drift image")
    corrected = viewer.layers[NAME].data.astype(np.float64)
    # the estimated drift is zero at frame 0; the truth is known up to that global offset
    offset = (w.drift_curve[0] - acquisition[1]).mean(axis=0)
    truth = shift(still, (-offset[1] / FINE, -offset[0] / FINE), order=3, mode="constant")
    error = np.abs(corrected - truth).max() / truth.max()
    blurred = np.abs(maps.sum(0) - truth).max() / truth.max()
    assert error < 0.05 and blurred > 0.3, (error, blurred)


def test_bad_inputs_and_cancel_change_no_layers(qtbot, widget):
    viewer, w = widget
    names = [layer.name for layer in viewer.layers]
    w.start("drift image")
    assert w.worker is None and "correct the drift of a Points layer first" in w.status.value
    w.drift_curve = (np.zeros((250, 2)), "locs")  # frames 1-250, the maps reach frame 300
    run(qtbot, w, "drift image")
    assert "covers frames 1-250 but the frames to sum reach frame 300" in w.status.value
    assert "\n" not in w.status.value
    w.drift_curve = (np.zeros((N_FRAMES, 2)), "locs")
    w.start("drift image")
    w.stop()
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)
    assert "cancelled" in w.status.value
    viewer.add_image(np.zeros((3, 8, 8)), name="plain")
    assert [name for name, _ in w._frame_layers()] == ["KDE"]  # "plain" records no frames
    assert [layer.name for layer in viewer.layers] == [*names, "plain"]
    viewer.layers.remove("KDE")
    w.start("drift image")
    assert w.worker is None and "choose an image layer of per-frame maps" in w.status.value


def test_std_maps_are_recognised_in_the_gui_and_from_files():
    from napari.layers import Image

    from napari_smlm_diffusion._napari.widgets.drift_images import frame_maps

    data = np.zeros((2, 4, 4))
    base = {FIRST_FRAME_KEY: 3, "pixel_size_nm": FINE}
    assert not frame_maps(Image(data, metadata=base)).is_std
    assert frame_maps(Image(data, metadata={**base, OUTPUT_KEY: "posterior_std"})).is_std
    on_disk = frame_maps(Image(data, metadata={**base, "std_calibration": {"floor": 0.01}}))
    assert on_disk.is_std and on_disk.first_frame == 3 and on_disk.pixel_size_nm == FINE
    with pytest.raises(ValueError, match="no positive 'pixel_size_nm'"):
        frame_maps(Image(data, metadata={FIRST_FRAME_KEY: 0}))
