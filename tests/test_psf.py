"""Tests of the pixelated Gaussian PSF and its Fisher information / CRLB."""

import math

import numpy as np
import pytest

from napari_smlm_diffusion.psf import (
    crlb,
    crlb_xy_nm,
    expected_image,
    fisher_information,
    mortensen_precision,
)


def test_expected_image_total_photons():
    shape = (64, 64)
    image = expected_image(shape, [32.3], [31.7], 5000.0, 1.3, background=3.0)
    assert image.shape == shape
    assert image.sum() == pytest.approx(5000.0 + 3.0 * 64 * 64, rel=1e-9)


@pytest.mark.parametrize(("x", "y"), [(10.5, 20.5), (10.2, 20.9)])
def test_expected_image_centroid_matches_position(x, y):
    image = expected_image((41, 21), [x], [y], 1000.0, 1.3)
    rows, cols = np.indices(image.shape)
    # Pixel (r, c) covers [c, c+1) x [r, r+1), so its centre is at (c + 0.5, r + 0.5).
    assert np.sum(image * (cols + 0.5)) / image.sum() == pytest.approx(x, abs=1e-9)
    assert np.sum(image * (rows + 0.5)) / image.sum() == pytest.approx(y, abs=1e-9)


def test_emitter_at_pixel_centre_peaks_on_that_pixel():
    image = expected_image((41, 21), [10.5], [20.5], 1000.0, 1.3)
    assert np.unravel_index(np.argmax(image), image.shape) == (20, 10)
    np.testing.assert_allclose(image, image[::-1, ::-1], rtol=1e-12)


def test_fisher_information_matches_finite_differences():
    x, y, photons, background, sigma, s = 5.3, 4.8, 1500.0, 12.0, 1.1, 1.7
    shape = (11, 10)
    theta = np.array([x, y, photons, background])

    def model(t):
        return expected_image(shape, [t[0]], [t[1]], t[2], sigma, t[3]).ravel()

    steps = np.array([1e-5, 1e-5, 1e-3, 1e-4])
    jacobian = np.empty((4, shape[0] * shape[1]))
    for i, h in enumerate(steps):
        delta = np.zeros(4)
        delta[i] = h
        jacobian[i] = (model(theta + delta) - model(theta - delta)) / (2 * h)
    expected = (jacobian / (model(theta) + s**2)) @ jacobian.T
    information = fisher_information(x, y, photons, background, sigma, shape, s)
    np.testing.assert_allclose(information, expected, rtol=1e-6)


def test_default_window_is_centred_on_emitter():
    sigma = 1.2
    half = math.ceil(4 * sigma)
    size = 2 * half + 1
    default = fisher_information(37.3, 12.6, 800.0, 5.0, sigma)
    explicit = fisher_information(half + 0.3, half + 0.6, 800.0, 5.0, sigma, (size, size))
    np.testing.assert_allclose(default, explicit, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(("photons", "background"), [(1e5, 0.1), (3e4, 1.0)])
def test_crlb_matches_mortensen_at_high_signal(photons, background):
    sigma = 1.2
    variance = crlb(20.3, 20.6, photons, background, sigma, shape=(41, 41))[:2]
    expected = mortensen_precision(photons, background, sigma) ** 2
    np.testing.assert_allclose(variance / expected, 1.0, atol=0.05)


def test_crlb_xy_nm_matches_mortensen_in_nm():
    pixel_size, sigma_px = 110.0, 1.3
    x_nm, y_nm = crlb_xy_nm(20.5, 20.5, 5e4, 0.5, sigma_px, pixel_size, shape=(41, 41))
    expected = mortensen_precision(5e4, 0.5, sigma_px * pixel_size, pixel_size=pixel_size)
    assert x_nm == pytest.approx(expected, rel=0.05)
    assert y_nm == pytest.approx(x_nm, rel=1e-9)


def test_mortensen_limits():
    sigma, photons = 1.2, 1000.0
    no_background = mortensen_precision(photons, 0.0, sigma)
    assert no_background == pytest.approx(math.sqrt((sigma**2 + 1 / 12) / photons))
    assert mortensen_precision(photons, 10.0, sigma) > no_background
    emccd = mortensen_precision(photons, 10.0, sigma, emccd=True)
    assert emccd**2 == pytest.approx(2 * mortensen_precision(photons, 10.0, sigma) ** 2)


def test_excess_noise_doubles_crlb():
    args = (5.4, 5.7, 1500.0, 15.0, 1.3, (11, 11), 1.5)
    plain = crlb(*args)
    emccd = crlb(*args, excess_noise=math.sqrt(2.0))
    np.testing.assert_allclose(emccd, 2.0 * plain, rtol=1e-10)
