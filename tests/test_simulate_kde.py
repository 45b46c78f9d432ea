"""Simulator and KDE: reproducibility, physics, coordinate round trips."""

import numpy as np
import pytest

from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.kde import find_peaks, render_kde
from napari_smlm_diffusion.simulate import LAYOUTS, SimulationConfig, simulate_stack


def test_seed_reproduces_stack_and_differs_across_seeds():
    config = SimulationConfig(size=(32, 32), density=2.0)
    a = simulate_stack(3, config, seed=7, with_kde=True)
    b = simulate_stack(3, config, seed=7, with_kde=True)
    c = simulate_stack(3, config, seed=8)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.kdes, b.kdes)
    assert a.truth.equals(b.truth)
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_requested_density(layout):
    config = SimulationConfig(size=(64, 64), density=3.0, layout=layout)
    stack = simulate_stack(20, config, seed=1)
    area_um2 = (64 * 0.1) ** 2
    per_frame = len(stack.truth) / 20 / area_um2
    assert stack.frames.dtype == np.uint16 and stack.frames.shape == (20, 64, 64)
    assert 2.2 < per_frame < 3.8
    inside = stack.truth[["x_nm", "y_nm"]].to_numpy()
    assert inside.min() >= 0 and inside.max() < 6400


@pytest.mark.parametrize("camera_name", ["sCMOS", "EMCCD"])
def test_background_level_in_photons_matches_configuration(camera_name):
    camera = preset(camera_name, pixel_size=100.0)
    config = SimulationConfig(size=(64, 64), density=0.0, background=80.0, camera=camera)
    frames = simulate_stack(5, config, seed=3).frames
    photons = camera.adu_to_photons(frames)
    assert photons.mean() == pytest.approx(80.0, rel=0.03)
    # shot noise (times the EMCCD excess factor squared) plus read noise, in photons
    expected_var = 80.0 * camera.excess_noise**2 / camera.quantum_efficiency + (
        camera.read_noise_photons**2
    )
    assert photons.var() == pytest.approx(expected_var, rel=0.1)


def test_emitter_photons_arrive_in_the_image():
    camera = preset("sCMOS")
    config = SimulationConfig(size=(32, 32), density=0.5, photons=3000.0, background=0.0,
                              camera=camera, margin_px=-8.0)
    stack = simulate_stack(10, config, seed=5)
    total = camera.adu_to_photons(stack.frames).sum()
    assert total == pytest.approx(3000.0 * len(stack.truth), rel=0.05)


def test_kde_target_peaks_at_true_positions():
    config = SimulationConfig(size=(32, 32), density=0.3, margin_px=0.0)
    stack = simulate_stack(1, config, seed=11, with_kde=True)
    assert stack.kdes.shape == (1, 128, 128)
    peaks = find_peaks(stack.kdes[0], config.fine_pixel_nm)
    truth = stack.truth.sort_values("x_nm")
    peaks = peaks.sort_values("x_nm")
    assert len(peaks) == len(truth)
    np.testing.assert_allclose(peaks.x_nm, truth.x_nm, atol=1.0)
    np.testing.assert_allclose(peaks.y_nm, truth.y_nm, atol=1.0)


def test_round_trip_coordinates_kde_coordinates_within_5_nm():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2)
    xy = (grid + 0.5) * 400.0 + rng.uniform(-100, 100, grid.shape)  # separated by >= 200 nm
    kde = render_kde(xy[:, 0], xy[:, 1], (96, 96), 25.0)
    peaks = find_peaks(kde, 25.0).sort_values(["y_nm", "x_nm"])
    assert len(peaks) == len(xy)
    order = np.lexsort((xy[:, 0], np.round(xy[:, 1] / 400)))
    found = peaks[["x_nm", "y_nm"]].to_numpy()
    found = found[np.lexsort((found[:, 0], np.round(found[:, 1] / 400)))]
    assert np.abs(found - xy[order]).max() < 5.0


def test_kde_convention_pixel_centres():
    kde = render_kde([37.5], [12.5], (4, 4), 25.0)
    assert np.unravel_index(kde.argmax(), kde.shape) == (0, 1)
    assert kde.max() == pytest.approx(1.0)
    wide = render_kde([500.0], [500.0], (40, 40), 25.0)
    assert wide.sum() == pytest.approx(2 * np.pi, rel=0.01)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="layout"):
        SimulationConfig(layout="spirals")
    with pytest.raises(ValueError, match="density"):
        SimulationConfig(density=-1.0)
    with pytest.raises(ValueError, match="n_frames"):
        simulate_stack(0, SimulationConfig())
