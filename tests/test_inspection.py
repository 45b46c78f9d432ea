"""Data inspection: camera, PSF, background, photons and density against simulated truth;
warnings; clear errors on stacks that cannot be inspected; the ``inspect`` command."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_smlm_diffusion.camera import PRESETS, Camera
from napari_smlm_diffusion.cli.inspect import register
from napari_smlm_diffusion.inspection import (
    REPORT_KEYS,
    InspectionError,
    check_settings,
    inspect_stack,
    job_warnings,
    training_ranges,
)
from napari_smlm_diffusion.inspection.checks import psf_warnings
from napari_smlm_diffusion.inspection.report import read_sample
from napari_smlm_diffusion.io import open_stack
from napari_smlm_diffusion.pretrained import read_model_card, resolve_weights
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_frames

SCMOS, EMCCD = PRESETS["sCMOS"], PRESETS["EMCCD"]


def simulate(n_frames: int, seed: int, **config) -> dict:
    """Frames (uint16 ADU), truth table and the true per-frame background of a simulation."""
    config = SimulationConfig(**{"size": (64, 64), "density": 0.3,
                                 "photons": (1000.0, 5000.0), "background": (20.0, 200.0),
                                 **config})
    frames = list(simulate_frames(n_frames, config, seed=seed, with_kde=False))
    return {"frames": np.stack([f.adu for f in frames]), "config": config,
            "truth": pd.concat([f.truth for f in frames], ignore_index=True),
            "background": np.array([f.background for f in frames])}


@pytest.fixture(scope="module")
def scmos():
    data = simulate(300, seed=11, camera=SCMOS)
    data["report"] = inspect_stack(data["frames"], SCMOS, n_frames=300)
    return data


@pytest.fixture(scope="module")
def emccd():
    data = simulate(300, seed=12, camera=EMCCD)
    data["report"] = inspect_stack(data["frames"], EMCCD, n_frames=300)
    return data


@pytest.fixture(scope="module")
def ranges():
    """The narrow training ranges of the first release's KDE CNN (still shipped: the posterior
    uses it), so that the warnings below have conditions outside them to name."""
    return training_ranges("kde_cnn_v1")


def check_common(data: dict, camera: Camera) -> None:
    """Sensitivity within 20 %, PSF within 15 %, background, photons and density close."""
    report, config = data["report"], data["config"]
    assert report.sensitivity_e_per_adu == pytest.approx(camera.sensitivity, rel=0.2)
    assert report.psf_sigma_nm == pytest.approx(config.psf_sigma_px * camera.pixel_size, rel=0.15)
    assert report.background_median_photons == pytest.approx(np.median(data["background"]),
                                                              rel=0.1)
    # Photons of detected isolated spots: the dimmest emitters are missed, so allow +30 %.
    assert report.photons_median == pytest.approx(np.median(data["truth"]["photons"]), rel=0.3)
    area_um2 = 64 * 64 * (camera.pixel_size * 1e-3) ** 2
    density = len(data["truth"]) / len(data["frames"]) / area_um2
    assert report.density_per_um2 == pytest.approx(density, rel=0.2)
    for key in REPORT_KEYS:
        value, error = report.estimate(key)
        # A read noise the data cannot measure is the given one, with an infinite uncertainty.
        measured = np.isfinite(error) or key == "read_noise_e"
        assert np.isfinite(value) and measured and error >= 0, key


def test_scmos_estimates_match_the_simulation(scmos):
    report = scmos["report"]
    check_common(scmos, SCMOS)
    assert abs(report.baseline_adu - SCMOS.baseline) < 2.0
    read_noise_tolerance = max(1.0, 3 * report.read_noise_e_uncertainty)
    assert abs(report.read_noise_e - SCMOS.read_noise) < read_noise_tolerance
    # At 20-200 photons of background the skewness does not pin the read noise: the baseline
    # uses the given one, and its uncertainty allows for the variance an sCMOS's pixel pattern
    # may add to it (the test below).
    assert not report.read_noise_from_data
    assert 2.0 < report.baseline_adu_uncertainty < 10.0


def test_wrong_sensitivity_does_not_move_the_baseline(scmos, ranges):
    # Sensitivity typed 4x too high: the given read noise (e-) converted with it is 20 times
    # too small in ADU^2, and the proposed baseline came out 5 ADU low (94.3 in the Camera &
    # PSF tab's screenshot); the conversion closest to the background's own read variance
    # is now used.
    typed = dataclasses.replace(SCMOS, sensitivity=2.0)
    report = inspect_stack(scmos["frames"], typed, n_frames=300)
    assert abs(report.baseline_adu - SCMOS.baseline) < 2.0
    assert any("sensitivity" in w for w in check_settings(report, typed, 120.0, ranges))


@pytest.mark.parametrize("background", [(20.0, 200.0), (2.0, 20.0)], ids=["bright", "dim"])
def test_scmos_pixel_pattern_baseline_within_its_uncertainty(background, ranges):
    # Pixels differing in offset (sd 3 ADU) and read noise (0.5 in log), as on a real sCMOS:
    # the baseline came out 7 ADU low with +-0.4, and inspect told the user to lower a correct
    # baseline ("above the dark level"). The offsets are now taken out as a fixed pattern, and
    # the baseline's uncertainty allows for read noise above the given (median) value.
    data = simulate(300, seed=15, camera=SCMOS, background=background, offset_spread_adu=3.0,
                    read_noise_spread=0.5)
    report = inspect_stack(data["frames"], SCMOS, n_frames=300)
    error = abs(report.baseline_adu - SCMOS.baseline)
    assert error < 2 * report.baseline_adu_uncertainty
    assert not [w for w in check_settings(report, SCMOS, 120.0, ranges) if "baseline" in w]
    if background == (2.0, 20.0):  # dim: the data measure the pattern's extra noise
        assert error < 2.0
        assert any("noisier than the given read noise" in note for note in report.notes)


def test_emccd_estimates_match_the_simulation(emccd):
    report = emccd["report"]
    check_common(emccd, EMCCD)
    # With an EM gain of 100 one photon is 21 ADU: the baseline is pinned to a fraction of a
    # photon (2 ADU is out of reach with 300 frames of 64 x 64; its standard error says so).
    error = abs(report.baseline_adu - EMCCD.baseline)
    assert error < 3 * report.baseline_adu_uncertainty + 1.0
    assert error / EMCCD.adu_per_photon < 0.5
    # The read noise (11 ADU) hides under the shot noise (>= 200 ADU): not measurable; the
    # report gives the given value with an infinite uncertainty (it read 0 +- 71 e- before).
    assert report.read_noise_e == EMCCD.read_noise
    assert report.read_noise_e_uncertainty == float("inf")
    assert not report.read_noise_from_data


@pytest.mark.parametrize("camera", [SCMOS, EMCCD], ids=["sCMOS", "EMCCD"])
def test_dim_background_estimates_match_the_simulation(camera):
    # 2-20 background photons per pixel: the spots' own shot noise dominates their residuals.
    # Weighted by the background's noise alone, no spot passed the single-molecule test and
    # inspect refused the stack ("only 0 isolated bright spots ... for the PSF width").
    data = simulate(300, seed=14, camera=camera, background=(2.0, 20.0))
    data["report"] = inspect_stack(data["frames"], camera, n_frames=300)
    check_common(data, camera)
    # The EM register's pixels without a photo-electron show the baseline: 2 ADU is in reach.
    assert abs(data["report"].baseline_adu - camera.baseline) < 2.0


def test_custom_scmos_camera_and_wide_psf():
    camera = Camera(baseline=400.0, sensitivity=0.25, quantum_efficiency=0.9, read_noise=2.5,
                    pixel_size=65.0)
    data = simulate(300, seed=13, camera=camera, background=(20.0, 100.0), psf_sigma_px=1.8)
    data["report"] = inspect_stack(data["frames"], camera, n_frames=300)
    check_common(data, camera)
    assert abs(data["report"].baseline_adu - camera.baseline) < 2.0


def test_flat_background_uses_the_spots(ranges):
    # One background level (as `smlm-diffusion simulate` makes by default): the gain comes from
    # the noise of isolated spots; the baseline is less precise and says so.
    data = simulate(200, seed=17, camera=SCMOS, background=50.0)
    data["report"] = report = inspect_stack(data["frames"], SCMOS)
    check_common(data, SCMOS)
    assert any("single level" in note for note in report.notes)
    tolerance = max(3.0, 3 * report.baseline_adu_uncertainty)
    assert abs(report.baseline_adu - SCMOS.baseline) < tolerance
    assert check_settings(report, SCMOS, 120.0, ranges) == []
    wrong = inspect_stack(data["frames"], EMCCD)
    assert any("camera sensitivity 4.5 e-/ADU" in w
               for w in check_settings(wrong, EMCCD, 192.0, ranges))


def test_flat_emccd_background_gain_from_its_skewness():
    # An EMCCD with one background level: the spots' noise alone put the sensitivity 7 % low and
    # the baseline 70 ADU high (1 photo-electron is 22 ADU); the background's third cumulant
    # (EM register) pins the gain, and the baseline's standard error covers its error.
    data = simulate(300, seed=20, camera=EMCCD, background=50.0)
    report = inspect_stack(data["frames"], EMCCD, n_frames=300)
    assert any("skewness of the background" in note for note in report.notes)
    assert abs(report.sensitivity_e_per_adu / EMCCD.sensitivity - 1.0) < 0.05
    assert report.baseline_adu_uncertainty < 50.0
    assert abs(report.baseline_adu - EMCCD.baseline) < 3 * report.baseline_adu_uncertainty
    assert report.read_noise_e_uncertainty == float("inf")  # the given one: not measured
    assert report.to_dict()["read_noise_e_uncertainty"] is None


def test_flat_emccd_background_without_usable_spots_gain_from_its_skewness_alone():
    # At 128 x 128 pixels the 200 brightest isolated spots are often two molecules (under 50 %
    # pass the single-molecule test); inspect used to give up, the skewness alone suffices.
    data = simulate(300, seed=0, camera=EMCCD, background=50.0, size=(128, 128))
    report = inspect_stack(data["frames"], EMCCD, n_frames=300)
    assert any("skewness of the background (EM register) alone" in note
               for note in report.notes)
    assert abs(report.sensitivity_e_per_adu / EMCCD.sensitivity - 1.0) < 0.05
    assert report.baseline_adu_uncertainty < 30.0
    assert abs(report.baseline_adu - EMCCD.baseline) < 3 * report.baseline_adu_uncertainty


def test_report_json_keys(scmos):
    payload = json.loads(scmos["report"].to_json())
    for key in (*REPORT_KEYS, "warnings"):
        assert key in payload
    for key in REPORT_KEYS:
        assert isinstance(payload[key], float) and isinstance(payload[f"{key}_uncertainty"],
                                                              float)
    assert payload["warnings"] == []


@pytest.mark.parametrize("weights", ["kde_cnn", "kde_cnn_v1"])
def test_training_ranges_come_from_the_model_card(weights):
    _, card = resolve_weights(weights)
    training = read_model_card(card)["training"]
    ranges = training_ranges(None if weights == "kde_cnn" else weights)  # default: shipped CNN
    assert set(ranges) == {"pixel_size_nm", "psf_sigma_px", "photons", "background"}
    for key, value in ranges.items():
        assert list(value) == training[key]


def test_right_settings_give_no_warning(scmos, emccd, ranges):
    assert check_settings(scmos["report"], SCMOS, 120.0, ranges) == []
    assert check_settings(emccd["report"], EMCCD, 192.0, ranges) == []


def test_wrong_preset_warns_about_the_sensitivity(scmos, emccd, ranges):
    # The report must be made with the settings it is compared with (the EM gain changes the
    # meaning of the slope).
    report = inspect_stack(scmos["frames"], EMCCD, n_frames=100)
    warnings = check_settings(report, EMCCD, 192.0, ranges)
    assert any("sensitivity 4.5 e-/ADU" in w and "EM gain 100" in w for w in warnings)
    report = inspect_stack(emccd["frames"], SCMOS, n_frames=100)
    warnings = check_settings(report, SCMOS, 160.0, ranges)
    assert any("sensitivity 0.46 e-/ADU" in w for w in warnings)


def test_baseline_above_the_dark_level_warns(scmos, ranges):
    camera = SCMOS.with_values(baseline=130.0)
    warnings = check_settings(scmos["report"], camera, 120.0, ranges)
    assert len(warnings) == 1 and "baseline 130 ADU is above the dark level" in warnings[0]
    assert check_settings(scmos["report"], SCMOS.with_values(baseline=99.0), 120.0, ranges) == []


def test_psf_and_conditions_outside_the_training_ranges_warn(ranges):
    data = simulate(150, seed=14, camera=SCMOS, psf_sigma_px=2.2, photons=(20000.0, 40000.0),
                    background=(250.0, 400.0))
    report = inspect_stack(data["frames"], SCMOS, n_frames=150)
    warnings = check_settings(report, SCMOS, 220.0, ranges)
    assert len(warnings) == 3
    assert warnings[0].startswith("PSF sigma 2.")
    assert "px is outside the 0.8-1.6 px" in warnings[0]
    assert "median photons per spot" in warnings[1] and "500-10000" in warnings[1]
    assert "background" in warnings[2] and "10-150 photons/px" in warnings[2]
    # A given PSF far from the measured one is named.
    warnings = check_settings(report, SCMOS, 120.0, ranges)
    assert any("PSF sigma 120 nm differs from the 2" in w for w in warnings)


def test_implausible_psf_and_pixel_size_warn(ranges):
    assert psf_warnings(120.0, 100.0) == []
    # 6 nm PSF at 5 nm pixels: a pixel size outside the training range and a PSF no microscope
    # gives; 250 nm at 100 nm pixels: 2.5 px, outside the PSF range of the model.
    frames = simulate(12, seed=15, camera=SCMOS)["frames"]
    warnings = job_warnings(frames, SCMOS.with_values(pixel_size=5.0), 6.0, ranges)
    assert any("implausible for a fluorescence microscope" in w for w in warnings)
    assert any("pixel size 5 nm is outside the 80-160 nm" in w for w in warnings)
    warnings = job_warnings(frames, SCMOS, 250.0, ranges)
    assert any("PSF sigma 2.5 px is outside" in w for w in warnings)
    assert any("implausible (expected 0.5-4 pixels)" in w
               for w in psf_warnings(500.0, 100.0))
    assert any("implausible (expected 0.5-4 pixels)" in w for w in psf_warnings(40.0, 100.0))


def test_job_warnings_catch_a_wrong_preset_cheaply(scmos, ranges):
    sample = scmos["frames"][::6]  # 50 frames
    assert job_warnings(sample, SCMOS, 120.0, ranges) == []
    warnings = job_warnings(sample, EMCCD, 192.0, ranges)
    assert any("camera sensitivity 4.5 e-/ADU" in w for w in warnings)


def test_no_molecule_found_warning(scmos, ranges):
    sample = scmos["frames"][:40]
    warnings = job_warnings(sample, SCMOS, 120.0, ranges, n_localizations=0)
    assert warnings == ["no molecule found although 40 frames have spots clearly above "
                        "background: check the camera settings"]
    assert job_warnings(sample, SCMOS, 120.0, ranges, n_localizations=12) == []
    # Frames without molecules do not raise the alarm.
    empty = simulate(40, seed=16, camera=SCMOS, density=0.0)["frames"]
    assert job_warnings(empty, SCMOS, 120.0, ranges, n_localizations=0) == []


def test_saturated_frames_are_left_out(scmos):
    frames = scmos["frames"].copy()
    frames[::5, :20, :] = 65535  # a fifth of the frames: a third of their pixels saturated
    report = inspect_stack(frames, SCMOS, n_frames=300)
    assert report.n_frames == 240
    assert any("60 of 300 sampled frames are saturated" in note for note in report.notes)
    assert report.sensitivity_e_per_adu == pytest.approx(0.46, rel=0.2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: simulate(1, seed=1)["frames"], "the stack has 1 frame: photon transfer needs"),
        (lambda: np.full((20, 64, 64), 65535, np.uint16),
         "20 of 20 sampled frames are saturated"),
        (lambda: simulate(30, seed=2, density=20.0)["frames"],
         "the frames have no background free of molecules"),
        (lambda: np.full((20, 64, 64), 300, np.uint16),
         "the background pixels have no noise at all: expected raw camera counts"),
        (lambda: simulate(100, seed=3, background=50.0, density=0.005)["frames"],
         "the background has a single level and only"),
        (lambda: simulate(20, seed=4)["frames"][:, :12, :12], "frames of 12x12 pixels are too "
         "small for spot statistics"),
        (lambda: simulate(12, seed=5, size=(24, 24))["frames"], "isolated bright spot"),
        (lambda: np.zeros((64, 64)), "expected a stack of frames (frames, rows, cols)"),
    ],
    ids=["one-frame", "saturated", "crowded", "constant", "flat-background-few-spots",
         "tiny-frames", "too-few-spots", "2d"],
)
def test_bad_input_gives_one_clear_line(make, message):
    with pytest.raises(InspectionError) as info:
        inspect_stack(make(), SCMOS)
    text = str(info.value)
    assert message in text and "\n" not in text


def _parser():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_table_and_json(scmos, tmp_path, capsys):
    path = tmp_path / "movie.tif"  # a plain TIFF: no camera metadata, as from a microscope
    tifffile.imwrite(path, scmos["frames"][:150])
    args = _parser().parse_args(["inspect", str(path), "--camera", "EMCCD", "--frames", "150"])
    args.func(args)
    out = capsys.readouterr().out
    assert "sensitivity [e-/ADU]" in out and "unsure (sensitivity off)" in out
    assert "warning: camera sensitivity 4.5 e-/ADU" in out
    args = _parser().parse_args(["inspect", str(path), "--json"])
    args.func(args)
    payload = json.loads(capsys.readouterr().out)
    assert payload["baseline_adu"] == pytest.approx(100, abs=2)
    assert payload["warnings"] == [] and payload["n_frames"] == 150
    with open_stack(path) as stack:  # the lazy reader gives the same report
        assert inspect_stack(stack.data, SCMOS, n_frames=150).to_dict() == {
            **payload, "warnings": []}


def test_cli_rejects_bad_input(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, simulate(1, seed=1)["frames"])
    args = _parser().parse_args(["inspect", str(path)])
    with pytest.raises(InspectionError, match="the stack has 1 frame"):
        args.func(args)
    with pytest.raises(SystemExit):
        _parser().parse_args(["inspect", str(path), "--frames", "5"])


def test_large_frames_are_cropped_and_budgeted():
    data = np.zeros((300, 700, 600), np.uint16)
    frames, notes = read_sample(data, 200)
    assert frames.shape == (16, 512, 512)  # 2**22 pixels
    assert any("central 512x512 pixels of the 700x600 frames" in note for note in notes)
    assert any("16 frames were read" in note for note in notes)


def test_job_warnings_stay_quiet_on_crowded_frames(ranges):
    # Crowded frames give no camera estimate, hence no (wrong) camera warning; their median
    # level is far above the training backgrounds, which is said.
    frames = simulate(30, seed=18, camera=SCMOS, density=20.0)["frames"]
    warnings = job_warnings(frames, SCMOS, 120.0, ranges)
    assert len(warnings) == 1 and "photons/px is outside the 10-150" in warnings[0]
    single = job_warnings(frames[0], SCMOS, 120.0, ranges)  # one 2-D frame works too
    assert len(single) == 1 and "photons/px is outside the 10-150" in single[0]


def test_flat_background_with_molecules_along_filaments_is_refused():
    # Molecules crowding along filaments overlap: their noise cannot give the gain when the
    # background has a single level, and the inspection says so instead of a wrong number.
    frames = simulate(200, seed=19, camera=SCMOS, background=50.0, density=1.0,
                      layout="filaments")["frames"]
    with pytest.raises(InspectionError, match="look like single molecules"):
        inspect_stack(frames, SCMOS)


def test_known_camera_and_psf_are_used_as_given():
    """adapt gives the camera of the file's metadata and its PSF: the inspection then measures
    only background, photons and density. On a dim 65 nm-pixel stack the measured camera put the
    background at 6.7 photons/px (true 15); on bright, crowded filaments no spot passed the
    PSF-width fit."""
    from napari_smlm_diffusion.simulate import simulate_stack
    from napari_smlm_diffusion.training_data import MICROSCOPE_CORNERS

    dim = MICROSCOPE_CORNERS["dim/65nm/psf1.9"]
    stack = simulate_stack(100, dim.config(64, 1.0), seed=660000)
    report = inspect_stack(stack.frames, dim.camera, camera_known=True,
                           psf_sigma_nm=dim.psf_sigma_px * dim.camera.pixel_size)
    assert report.baseline_adu == dim.camera.baseline
    assert report.sensitivity_e_per_adu == pytest.approx(dim.camera.sensitivity)
    assert report.psf_sigma_nm == pytest.approx(dim.psf_sigma_px * dim.camera.pixel_size)
    assert report.background_median_photons == pytest.approx(dim.background, rel=0.15)
    assert "camera values as given, not measured" in report.notes

    bright = MICROSCOPE_CORNERS["bright/130nm/bg250"]
    stack = simulate_stack(60, bright.config(64, 1.0), seed=660001)
    with pytest.raises(InspectionError):
        inspect_stack(stack.frames, bright.camera, camera_known=True)
    report = inspect_stack(stack.frames, bright.camera, camera_known=True, psf_sigma_nm=130.0)
    assert report.background_median_photons == pytest.approx(bright.background, rel=0.1)
