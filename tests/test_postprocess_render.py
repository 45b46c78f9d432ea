"""Rendering: pixel-grid convention, total intensity, peak positions, uncertainty-aware blur."""

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.io import TableError
from napari_smlm_diffusion.postprocess.common import PostprocessError
from napari_smlm_diffusion.postprocess.render import render


def _table(x, y, **extra):
    return pd.DataFrame({"frame": np.zeros(len(x), int), "x_nm": x, "y_nm": y, **extra})


def test_histogram_follows_the_pixel_grid():
    # pixel (r, c) covers [c*p, (c+1)*p) x [r*p, (r+1)*p): origin at the top-left corner
    table = _table([0.0, 9.99, 10.0, 25.0, 25.0, 35.0], [0.0, 0.0, 0.0, 15.0, 15.0, 39.9])
    image = render(table, 10.0)
    assert image.dtype == np.float32
    assert image.shape == (4, 4)
    assert image[0, 0] == 2 and image[0, 1] == 1 and image[1, 2] == 2 and image[3, 3] == 1
    assert image.sum() == 6


def test_shape_crops_outside_localizations():
    image = render(_table([5.0, 95.0], [5.0, 95.0]), 10.0, shape=(5, 5))
    assert image.shape == (5, 5) and image.sum() == 1


@pytest.mark.parametrize("blur", [15.0, "uncertainty"])
def test_gaussians_keep_the_total_and_peak_at_the_positions(blur):
    rng = np.random.default_rng(0)
    x = rng.uniform(200, 1800, 40)
    y = rng.uniform(200, 1800, 40)
    table = _table(x, y, uncertainty_nm=rng.uniform(8, 25, 40))
    image = render(table, 5.0, blur=blur, shape=(400, 400))
    assert image.sum() == pytest.approx(40, rel=1e-4)
    one = render(table.iloc[[7]], 5.0, blur=blur, shape=(400, 400)).astype(np.float64)
    rows, cols = np.indices(one.shape)
    # centroid in nm: pixel c has its centre at (c + 0.5) * p
    assert np.sum((cols + 0.5) * 5.0 * one) / one.sum() == pytest.approx(x[7], abs=0.01)
    assert np.sum((rows + 0.5) * 5.0 * one) / one.sum() == pytest.approx(y[7], abs=0.01)
    r, c = np.unravel_index(np.argmax(one), one.shape)
    assert (c, r) == (int(x[7] // 5), int(y[7] // 5))


def test_uncertainty_rendering_uses_each_sigma():
    table = _table([501.0, 1501.0], [501.0, 501.0], uncertainty_x_nm=[10.0, 30.0],
                   uncertainty_y_nm=[10.0, 15.0], uncertainty_nm=[10.0, 20.0])
    image = render(table, 2.0, blur="uncertainty", shape=(500, 1000)).astype(np.float64)
    sharp, wide = image[:, :500], image[:, 500:]
    assert sharp.sum() == pytest.approx(1.0, rel=1e-4) and wide.sum() == pytest.approx(1.0, 1e-4)
    # peak of a unit-mass Gaussian centred on a pixel: about p^2 / (2 pi sx sy)
    assert sharp.max() == pytest.approx(4 / (2 * np.pi * 100), rel=0.01)
    assert wide.max() == pytest.approx(4 / (2 * np.pi * 450), rel=0.01)
    cols = np.arange(500) + 0.5
    spread_x = np.sqrt(np.sum(wide.sum(0) * (cols * 2 + 1000 - 1501) ** 2))
    spread_y = np.sqrt(np.sum(wide.sum(1) * (cols * 2 - 501) ** 2))
    assert spread_x == pytest.approx(np.sqrt(30**2 + 4 / 12), rel=0.01)
    assert spread_y == pytest.approx(np.sqrt(15**2 + 4 / 12), rel=0.01)


def test_tile_chunks_give_the_same_image():
    rng = np.random.default_rng(1)
    n = 20_000
    table = _table(rng.uniform(0, 1000, n), rng.uniform(0, 1000, n),
                   uncertainty_nm=rng.uniform(1, 40, n))
    from napari_smlm_diffusion.postprocess import render as module

    whole = render(table, 10.0, blur="uncertainty", shape=(100, 100))
    old = module._TILE_CHUNK
    module._TILE_CHUNK = 7
    try:
        chunked = render(table, 10.0, blur="uncertainty", shape=(100, 100))
    finally:
        module._TILE_CHUNK = old
    assert np.allclose(whole, chunked, atol=1e-4)


@pytest.mark.parametrize(
    ("table", "kwargs", "error", "message"),
    [
        (_table([1.0], [1.0]), {"blur": "uncertainty"}, PostprocessError,
         "needs the column 'uncertainty"),
        (_table([1.0, 2.0], [1.0, 2.0], uncertainty_nm=[5.0, np.nan]), {"blur": "uncertainty"},
         PostprocessError, "1 localization"),
        (_table([1.0], [1.0]), {"blur": -3.0}, PostprocessError, "positive number"),
        (_table([1.0], [1.0]), {"blur": "wide"}, PostprocessError, "'uncertainty' or a sigma"),
        (_table([], []), {}, TableError, "empty"),
        (_table([np.inf], [1.0]), {}, TableError, "NaN or infinite"),
        (pd.DataFrame({"frame": [0], "x": [1.0], "y": [1.0]}), {}, TableError, "x_nm, y_nm"),
    ],
)
def test_bad_input(table, kwargs, error, message):
    with pytest.raises(error, match=message):
        render(table, 10.0, **kwargs)


def test_tabulated_fixed_blur_matches_exact_weights():
    from napari_smlm_diffusion.postprocess.render import render_gaussians

    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 500, 3000), rng.uniform(0, 500, 3000)
    sigma = np.full(3000, 12.0)
    tabulated = render_gaussians(x, y, sigma, sigma, 5.0, (100, 100))
    sigma[0] *= 1 + 1e-12  # no longer one sigma for all: exact weights
    exact = render_gaussians(x, y, sigma, sigma, 5.0, (100, 100))
    assert np.abs(tabulated - exact).max() < 1e-3 * exact.max()
