"""Tests of the camera model: ADU <-> photons, presets, validation, Poisson-normal transform."""

import math
import re

import numpy as np
import pytest

from napari_smlm_diffusion.camera import (
    EMCCD_EXCESS_NOISE,
    PRESETS,
    Camera,
    CameraError,
    camera_values_from_metadata,
    preset,
)
from napari_smlm_diffusion.errors import one_line

CAMERAS = [
    PRESETS["sCMOS"],
    PRESETS["EMCCD"],
    Camera(baseline=400.0, sensitivity=2.1, em_gain=30.0, quantum_efficiency=0.6, read_noise=5.0),
]


@pytest.mark.parametrize("camera", CAMERAS)
def test_adu_photons_round_trip(camera):
    photons = np.array([0.0, 0.5, 3.0, 120.0, 4000.0])
    adu = camera.photons_to_adu(photons)
    np.testing.assert_allclose(camera.adu_to_photons(adu), photons, rtol=1e-5, atol=1e-3)
    assert camera.photons_to_adu(0.0) == pytest.approx(camera.baseline)


@pytest.mark.parametrize("camera", CAMERAS)
def test_adu_to_photons_convention(camera):
    adu = np.array([camera.baseline, camera.baseline + 250.0, camera.baseline + 1234.5])
    expected = (
        (adu - camera.baseline) * camera.sensitivity / camera.em_gain / camera.quantum_efficiency
    )
    result = camera.adu_to_photons(adu)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)


def test_presets():
    scmos, emccd = preset("sCMOS"), preset("EMCCD")
    assert scmos is PRESETS["sCMOS"]
    assert emccd is PRESETS["EMCCD"]
    assert preset("scmos") is scmos
    assert preset("emccd") is emccd
    assert not scmos.is_emccd
    assert scmos.excess_noise == 1.0
    assert emccd.is_emccd
    assert emccd.excess_noise == pytest.approx(math.sqrt(2.0))
    assert EMCCD_EXCESS_NOISE == pytest.approx(math.sqrt(2.0))
    assert emccd.read_noise_photons == pytest.approx(
        emccd.read_noise / (emccd.em_gain * emccd.quantum_efficiency)
    )
    changed = preset("EMCCD", em_gain=300.0)
    assert changed.em_gain == 300.0
    assert changed.sensitivity == emccd.sensitivity
    assert PRESETS["EMCCD"].em_gain == 100.0
    assert Camera(**scmos.to_dict()) == scmos


def test_unknown_preset():
    with pytest.raises(CameraError, match="unknown camera preset 'Orca'"):
        preset("Orca")


INVALID = [
    ("sensitivity", 0.0),
    ("sensitivity", -0.5),
    ("read_noise", -1.0),
    ("pixel_size", 0.0),
    ("pixel_size", -100.0),
    ("em_gain", 0.5),
    ("em_gain", 0.0),
    ("quantum_efficiency", 0.0),
    ("quantum_efficiency", -0.2),
    ("quantum_efficiency", 1.01),
    ("baseline", math.nan),
    ("baseline", math.inf),
    ("sensitivity", math.nan),
    ("read_noise", math.inf),
    ("pixel_size", -math.inf),
    ("em_gain", math.nan),
    ("quantum_efficiency", math.nan),
    ("baseline", "abc"),
    ("sensitivity", None),
    ("read_noise", [1.6]),
    ("pixel_size", "100 nm"),
    ("em_gain", object()),
    ("quantum_efficiency", 1j),
]


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_values_raise_camera_error_naming_parameter(name, value):
    pattern = rf"\b{re.escape(name)}\b"
    with pytest.raises(CameraError, match=pattern):
        Camera(**{name: value})
    with pytest.raises(CameraError, match=pattern):
        PRESETS["sCMOS"].with_values(**{name: value})
    with pytest.raises(CameraError, match=pattern):
        preset("EMCCD", **{name: value})


def test_camera_error_is_value_error():
    assert issubclass(CameraError, ValueError)


def _mean_and_variance(values):
    values = np.asarray(values, dtype=np.float64)
    return values.mean(), values.var(ddof=1)


@pytest.mark.parametrize("photons", [2.0, 40.0])
def test_poisson_normal_scmos_mean_equals_variance(photons):
    camera = PRESETS["sCMOS"]
    rng = np.random.default_rng(7)
    n_pixels = 200_000
    electrons = rng.poisson(camera.quantum_efficiency * photons, n_pixels) + rng.normal(
        0.0, camera.read_noise, n_pixels
    )
    adu = np.round(electrons / camera.sensitivity + camera.baseline)
    mean, variance = _mean_and_variance(camera.poisson_normal(adu))
    expected = camera.quantum_efficiency * photons + camera.read_noise**2
    assert mean == pytest.approx(expected, rel=0.01)
    assert variance == pytest.approx(mean, rel=0.03)


@pytest.mark.parametrize("photons", [5.0, 60.0])
def test_poisson_normal_emccd_mean_equals_variance(photons):
    camera = PRESETS["EMCCD"]
    rng = np.random.default_rng(11)
    n_pixels = 200_000
    detected = rng.poisson(camera.quantum_efficiency * photons, n_pixels)
    amplified = rng.gamma(shape=detected, scale=camera.em_gain)
    electrons = amplified + rng.normal(0.0, camera.read_noise, n_pixels)
    adu = np.round(electrons / camera.sensitivity + camera.baseline)
    transformed = camera.poisson_normal(adu)
    mean, variance = _mean_and_variance(transformed)
    read = camera.read_noise / camera.em_gain
    expected = (camera.quantum_efficiency * photons + read**2) / camera.excess_noise**2
    assert mean == pytest.approx(expected, rel=0.01)
    assert variance == pytest.approx(mean, rel=0.05)
    # Without the division by F^2 the variance would be about twice the mean.
    raw_mean, raw_variance = _mean_and_variance(transformed * camera.excess_noise**2)
    assert raw_variance / raw_mean == pytest.approx(2.0, rel=0.05)


def test_poisson_normal_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    camera = PRESETS["EMCCD"]
    adu = np.array([[100.0, 180.5], [1500.0, 97.0]], dtype=np.float32)
    result = camera.poisson_normal(torch.from_numpy(adu))
    assert isinstance(result, torch.Tensor)
    np.testing.assert_allclose(result.numpy(), camera.poisson_normal(adu), rtol=1e-6)


def test_camera_values_from_metadata_top_level_wins_and_text_is_ignored():
    ignored = []
    values = camera_values_from_metadata(
        {"baseline": "100; rm -rf /", "em_gain": 50, "pixel_size_nm": 107.0, "flag": True,
         "read_noise": True, "camera": {"baseline": 98.0, "em_gain": 1.0, "sensitivity": 0.5,
                                        "psf_sigma_nm": 130.0}},
        on_ignored=lambda key, value: ignored.append(key))
    assert values == {"baseline": 98.0, "em_gain": 50.0, "sensitivity": 0.5,
                      "pixel_size": 107.0, "psf_sigma_nm": 130.0}
    assert ignored == ["baseline", "read_noise"]
    assert camera_values_from_metadata(None) == {}
    assert camera_values_from_metadata({"camera": "EMCCD", "baseline": float("nan")}) == {}


def test_one_line_flattens_and_shortens_messages():
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    text = one_line("x" * 1000, limit=50)
    assert len(text) == 50 and text.endswith("...")
