"""The napari-free engine: batching, tiling, frame ranges, devices, cancel, weights checks."""

import numpy as np
import pytest
import torch

from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.devices import Cancelled, DeviceError, resolve_device
from napari_smlm_diffusion.geometry import parse_frame_range
from napari_smlm_diffusion.pipeline import KdeEngine, run_kde
from napari_smlm_diffusion.pretrained import WeightsError, load_kde_cnn
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack
from napari_smlm_diffusion.tiling import tiles


@pytest.fixture
def stack():
    return simulate_stack(6, SimulationConfig(size=(20, 27), density=2.0), seed=1).frames


def test_sum_image_equals_sum_of_kdes_and_batches_do_not_matter(untrained_weights, stack):
    engine = KdeEngine.load(str(untrained_weights), device="cpu")
    camera = preset("sCMOS")
    one = run_kde(stack, camera, engine, batch_size=1, keep_kdes=True)
    many = run_kde(stack, camera, engine, batch_size=4, keep_kdes=True)
    assert one.kdes.shape == (6, 80, 108)
    np.testing.assert_allclose(one.kdes, many.kdes, atol=1e-5)
    np.testing.assert_allclose(one.sum_image, one.kdes.sum(axis=0), rtol=1e-5, atol=1e-5)


def test_tiled_prediction_equals_whole_frame(untrained_weights, monkeypatch):
    import napari_smlm_diffusion.pipeline as pipeline

    frames = simulate_stack(2, SimulationConfig(size=(70, 90), density=2.0), seed=2).frames
    engine = KdeEngine.load(str(untrained_weights), device="cpu")
    camera = preset("sCMOS")
    whole = engine.predict(frames, camera)
    monkeypatch.setattr(pipeline, "MAX_TILE_PX", 40)
    monkeypatch.setattr(pipeline, "RECEPTIVE_MARGIN_PX", 8)
    tiled = engine.predict(frames, camera)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tiles_cover_every_pixel_once():
    for size in (5, 64, 100, 513):
        covered = np.zeros(size, int)
        for r0, r1, k0, k1 in tiles(size, 64, 10):
            assert r0 <= k0 < k1 <= r1
            covered[k0:k1] += 1
        assert (covered == 1).all()


def test_frame_range_parsing():
    assert parse_frame_range("2-4", 10) == range(1, 4)
    assert parse_frame_range(None, 3) == range(3)
    assert parse_frame_range("5", 10) == range(4, 5)
    for bad in ("0-3", "4-2", "1-11", "x"):
        with pytest.raises(ValueError, match="frames"):
            parse_frame_range(bad, 10)


def test_frame_range_selects_frames(untrained_weights, stack):
    engine = KdeEngine.load(str(untrained_weights), device="cpu")
    part = run_kde(stack, preset("sCMOS"), engine, frames=range(2, 4), keep_kdes=True)
    whole = run_kde(stack, preset("sCMOS"), engine, keep_kdes=True)
    np.testing.assert_allclose(part.kdes, whole.kdes[2:4], atol=1e-5)
    assert set(part.localizations.get("frame", [])) <= {2, 3}


def test_cancel_stops_before_the_next_batch(untrained_weights, stack):
    engine = KdeEngine.load(str(untrained_weights), device="cpu")
    seen = []
    with pytest.raises(Cancelled):
        run_kde(stack, preset("sCMOS"), engine, batch_size=2,
                progress=lambda done, total: seen.append(done), should_stop=lambda: len(seen) >= 1)
    assert seen == [2]


def test_devices():
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="not available|unknown"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="cuda.*not available"):
            resolve_device("cuda")


def test_altered_or_missing_weights_are_refused(untrained_weights, tmp_path):
    data = bytearray(untrained_weights.read_bytes())
    data[-1] ^= 0xFF
    untrained_weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="altered or corrupt"):
        load_kde_cnn(str(untrained_weights))
    with pytest.raises(WeightsError, match="not found"):
        load_kde_cnn(str(tmp_path / "missing.safetensors"))


def test_joint_fit_reaches_the_crlb_and_reports_it():
    from napari_smlm_diffusion.psf import crlb, expected_image
    from napari_smlm_diffusion.refine import joint_fit

    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(5)), -1).reshape(-1, 2) * 12.0 + 8.0
    x_true, y_true = grid[:, 0] + rng.uniform(-0.5, 0.5, 25), grid[:, 1] + rng.uniform(-.5, .5, 25)
    expected = expected_image((64, 64), x_true, y_true, 3000.0, 1.2, 20.0)
    errors, stds = [], []
    for _ in range(20):
        image = rng.poisson(expected).astype(float)
        start_x = x_true + rng.normal(0, 0.15, 25)
        start_y = y_true + rng.normal(0, 0.15, 25)
        fit = joint_fit(image, start_x, start_y, np.full(25, 2000.0), 15.0, 1.2)
        assert fit.fitted.all()
        errors.append(fit.x - x_true)
        stds.append(fit.std_x)
    bound = np.sqrt(crlb(8.0, 8.0, 3000.0, 20.0, 1.2)[0])
    assert np.std(errors) == pytest.approx(bound, rel=0.25)
    assert np.mean(stds) == pytest.approx(bound, rel=0.15)


def test_joint_fit_tiles_a_dense_large_frame_like_the_whole():
    from napari_smlm_diffusion.psf import expected_image
    from napari_smlm_diffusion.refine import MAX_EMITTERS_PER_SOLVE, joint_fit

    rng = np.random.default_rng(0)
    n = MAX_EMITTERS_PER_SOLVE + 50
    x, y = rng.uniform(2, 148, n), rng.uniform(2, 148, n)  # 0.02 per px^2
    image = rng.poisson(expected_image((150, 150), x, y, 4000.0, 1.2, 30.0)).astype(float)
    fit = joint_fit(image, x + 0.1, y - 0.1, np.full(n, 3000.0), 30.0, 1.2)
    assert fit.fitted.mean() > 0.95
    ok = fit.fitted
    assert np.sqrt(np.mean((fit.x[ok] - x[ok]) ** 2)) < 0.1  # pixels
    garbage = joint_fit(image, *rng.uniform(0, 150, (2, 150 * 150 // 4)), np.ones(5625), 30., 1.2)
    assert not garbage.fitted.any()


def test_precision_without_moving_positions_matches_the_crlb():
    from napari_smlm_diffusion.psf import crlb, expected_image
    from napari_smlm_diffusion.refine import joint_fit

    image = expected_image((32, 32), [10.3], [20.6], [3000.0], 1.2, 20.0)
    fit = joint_fit(image, [10.4], [20.5], [3000.0], 20.0, 1.2, iterations=0)
    assert fit.x[0] == 10.4 and fit.y[0] == 20.5
    bound = np.sqrt(crlb(10.4, 20.5, 3000.0, 20.0, 1.2, shape=(32, 32))[:2])
    np.testing.assert_allclose([fit.std_x[0], fit.std_y[0]], bound, rtol=0.02)


def test_frames_with_a_step_are_processed_exactly(untrained_weights, stack):
    """range(0, 6, 2): frames 0, 2 and 4 only, with and without localization."""
    engine = KdeEngine.load(str(untrained_weights), device="cpu")
    camera = preset("sCMOS")
    chosen = range(0, 6, 2)
    expected = engine.predict(stack[list(chosen)], camera)
    summed = run_kde(stack, camera, engine, frames=chosen, batch_size=2, localize=False,
                     keep_kdes=True)
    np.testing.assert_allclose(summed.kdes, expected, atol=1e-6)
    np.testing.assert_allclose(summed.sum_image, expected.sum(axis=0), rtol=1e-5, atol=1e-4)
    assert summed.frames == chosen
    located = run_kde(stack, camera, engine, frames=chosen, batch_size=2)
    np.testing.assert_allclose(located.sum_image, summed.sum_image, rtol=1e-6)
    assert set(located.localizations["frame"]) <= set(chosen)
    backwards = run_kde(stack, camera, engine, frames=range(4, -1, -2), keep_kdes=True,
                        localize=False)
    np.testing.assert_allclose(backwards.kdes, expected[::-1], atol=1e-6)
