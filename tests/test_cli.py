"""The smlm-diffusion command: simulate, evaluate, help text and errors."""

import json

import numpy as np
import pytest

from card_helpers import denoiser_card
from napari_smlm_diffusion.camera import CameraError
from napari_smlm_diffusion.cli import build_parser, main
from napari_smlm_diffusion.devices import DeviceError
from napari_smlm_diffusion.errors import InputError
from napari_smlm_diffusion.io import open_stack, read_localizations
from napari_smlm_diffusion.pretrained import WeightsError


@pytest.fixture
def simulated(tmp_path):
    out = tmp_path / "sim"
    code = main(["simulate", str(out), "--frames", "5", "--size", "32", "--density", "2",
                 "--seed", "4", "--camera", "EMCCD", "--layout", "rings"])
    assert code == 0
    return out


def test_simulate_writes_stack_with_pixel_size_and_truth(simulated):
    with open_stack(simulated / "stack.tif") as stack:
        assert stack.data.shape == (5, 32, 32)
        assert stack.data.dtype == np.uint16
        assert stack.pixel_size_nm == pytest.approx(160.0)
        assert stack.metadata["em_gain"] == pytest.approx(100.0)
    truth = read_localizations(simulated / "truth.csv")
    assert len(truth) > 0
    assert truth["frame"].between(0, 4).all()
    header = (simulated / "truth.csv").read_text().splitlines()[0]
    assert header.startswith('"id","frame","x [nm]","y [nm]"')


def test_evaluate_truth_against_itself_is_perfect(simulated, capsys):
    truth = str(simulated / "truth.csv")
    assert main(["evaluate", truth, truth, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["jaccard"] == pytest.approx(100.0)
    assert result["rmse_lateral_nm"] == pytest.approx(0.0, abs=1e-6)
    assert result["efficiency"] == pytest.approx(100.0)


def test_evaluate_missing_file_is_one_line_error(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "nope.csv"), str(tmp_path / "nope.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "nope.csv" in err


def test_bad_option_value_exits_non_zero(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", str(tmp_path), "--frames", "0"])
    assert exit_info.value.code == 2


def test_help_states_units():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    text = sub["simulate"].format_help()
    for unit in ("nm", "um^2", "photons", "pixels"):
        assert unit in text


def test_localize_and_kde_commands_with_given_weights(simulated, untrained_weights, tmp_path):
    from napari_smlm_diffusion.io import open_stack as open_tiff

    locs = tmp_path / "locs.csv"
    code = main(["localize", str(simulated / "stack.tif"), "-o", str(locs), "--weights",
                 str(untrained_weights), "--frames", "2-4", "--device", "cpu"])
    assert code == 0 and locs.is_file()
    table = read_localizations(locs)
    assert table.empty or table["frame"].between(1, 3).all()
    kde = tmp_path / "kde.tif"
    assert main(["kde", str(simulated / "stack.tif"), "-o", str(kde), "--weights",
                 str(untrained_weights), "--frames", "1-2"]) == 0
    with open_tiff(kde) as out:
        assert out.data.shape == (2, 128, 128)
        assert out.pixel_size_nm == pytest.approx(40.0)
    summed = tmp_path / "sum.tif"
    assert main(["kde", str(simulated / "stack.tif"), "-o", str(summed), "--sum", "--weights",
                 str(untrained_weights)]) == 0


@pytest.mark.parametrize(
    "extra, message",
    [(["--frames", "4-9"], "outside the stack"), (["--device", "cuda"], "not available"),
     (["--sensitivity", "-1"], "expected a number > 0")],
)
def test_localize_bad_input_is_one_clear_line(simulated, untrained_weights, tmp_path, capsys,
                                              extra, message):
    import torch

    if extra[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    out = tmp_path / "locs.csv"
    try:
        code = main(["localize", str(simulated / "stack.tif"), "-o", str(out), "--weights",
                     str(untrained_weights), *extra])
    except SystemExit as exit_info:  # argparse rejects malformed values itself
        code = exit_info.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1]
    assert not out.exists()


def test_localize_missing_stack(tmp_path, capsys):
    code = main(["localize", str(tmp_path / "absent.tif"), "-o", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "absent.tif" in err and len(err.splitlines()) == 1


def test_posterior_command_writes_maps_and_table(simulated, untrained_weights, tmp_path):
    import torch

    from napari_smlm_diffusion.models.denoiser import ConditionalDenoiser
    from napari_smlm_diffusion.pretrained import save_weights

    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(channels=(8, 8, 8), embed_dim=8)
    weights = tmp_path / "den.safetensors"
    calibration = {"sample_variance_weight": 0.5, "floor": 0.01}
    save_weights(denoiser, weights, denoiser_card(denoiser.config, untrained_weights,
                                                  pixel_variance_calibration=calibration))
    out = tmp_path / "post"
    code = main(["posterior", str(simulated / "stack.tif"), "-o", str(out), "--frames", "1-2",
                 "--samples", "3", "--steps", "2", "--keep-samples", "2", "--weights",
                 str(untrained_weights), "--denoiser-weights", str(weights)])
    assert code == 0
    with open_stack(out / "mean.tif") as mean, open_stack(out / "std.tif") as std:
        assert mean.data.shape == std.data.shape == (2, 128, 128)
        assert mean.pixel_size_nm == pytest.approx(40.0)
        # the calibrated std map: never below the floor, and the file says how it was made
        assert np.asarray(std.data[:]).min() ** 2 >= 0.01 * (1 - 1e-4)
        assert std.metadata["std_calibration"] == calibration
    with open_stack(out / "samples.tif") as samples:
        assert samples.data.shape == (4, 128, 128)
    with open_stack(out / "mean.tif") as mean, open_stack(out / "std.tif") as std, \
            open_stack(out / "sum_mean.tif") as sum_mean, \
            open_stack(out / "sum_std.tif") as sum_std:
        np.testing.assert_allclose(sum_mean.data[0], np.asarray(mean.data[:]).sum(0), atol=1e-4)
        np.testing.assert_allclose(sum_std.data[0] ** 2,
                                   (np.asarray(std.data[:]) ** 2).sum(0), rtol=1e-4, atol=1e-6)
        assert sum_mean.pixel_size_nm == pytest.approx(40.0)
    assert sorted(p.name for p in out.iterdir()) == [  # no scratch or temporary files left
        "localizations.csv", "mean.tif", "samples.tif", "std.tif", "sum_mean.tif", "sum_std.tif"]
    header = (out / "localizations.csv").read_text().splitlines()[0]
    assert '"detection probability"' in header


@pytest.mark.parametrize(("error", "code", "fragment"), [
    pytest.param(ValueError("operands could not be broadcast"), 1,
                 "internal error ValueError: operands could not be broadcast", id="bug-value"),
    pytest.param(RuntimeError("expected scalar type Float"), 1,
                 "internal error RuntimeError: expected scalar type Float", id="bug-runtime"),
    pytest.param(KeyError("x_nm"), 1, "internal error KeyError", id="bug-key"),
    pytest.param(InputError("frames 3-9 lie outside the stack"), 2,
                 "error: frames 3-9 lie outside the stack", id="bad-input"),
    pytest.param(CameraError("sensitivity must be > 0"), 2, "error: sensitivity", id="camera"),
    pytest.param(DeviceError("device 'cuda:3' does not exist"), 2, "cuda:3", id="device"),
    pytest.param(WeightsError("weights file x is not a safetensors file"), 2,
                 "not a safetensors file", id="weights"),
])
def test_bugs_exit_1_and_bad_input_exits_2(simulated, untrained_weights, tmp_path, capsys,
                                           monkeypatch, error, code, fragment):
    """Only our own error classes (and files, the machine) count as bad input: any other
    ValueError or RuntimeError is a bug, reported as an internal error."""
    from napari_smlm_diffusion.pipeline import KdeEngine

    def predict(self, frames, camera):
        raise error

    monkeypatch.setattr(KdeEngine, "predict", predict)
    result = main(["localize", str(simulated / "stack.tif"), "-o", str(tmp_path / "l.csv"),
                   "--weights", str(untrained_weights)])
    err = capsys.readouterr().err.strip().splitlines()
    assert result == code
    assert len(err) == 1 and fragment in err[0]
    if code == 1:
        assert err[0].endswith("(please report it; rerun with --debug for the traceback)")


def test_library_messages_are_logged_and_the_command_shows_them(untrained_weights, caplog,
                                                                 tmp_path, capsys):
    """Without a GUI or a command, the engine logs (module logger) instead of printing; the
    command routes the records to stderr, one line each."""
    import logging

    from napari_smlm_diffusion.camera import preset
    from napari_smlm_diffusion.io import write_tiff
    from napari_smlm_diffusion.pipeline import KdeEngine, run_kde

    dark = np.full((2, 16, 16), 90, np.uint16)  # every pixel below the baseline
    with caplog.at_level(logging.WARNING, logger="napari_smlm_diffusion"):
        run_kde(dark, preset("sCMOS"), KdeEngine.load(str(untrained_weights), device="cpu"))
    assert capsys.readouterr().out == ""
    assert [r.name for r in caplog.records] == ["napari_smlm_diffusion.pipeline"]
    assert "frame 1: every pixel is at or below the camera baseline" in caplog.records[0].message
    stack = tmp_path / "dark.tif"
    write_tiff(stack, dark, pixel_size_nm=100.0)
    assert main(["localize", str(stack), "-o", str(tmp_path / "l.csv"), "--weights",
                 str(untrained_weights)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smlm-diffusion: frame 1: every pixel")


def test_posterior_help_describes_the_calibrated_uncertainty(capsys):
    with pytest.raises(SystemExit):
        main(["posterior", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "information-matrix precision" in text and "local density" in text
    assert "is the per-axis spread over samples" not in text


def test_simulate_blinking_drift_and_pixel_maps(tmp_path):
    from napari_smlm_diffusion.io import read_localizations

    code = main(["simulate", str(tmp_path / "sim"), "--frames", "30", "--size", "24",
                 "--on-time", "4", "--off-time", "40", "--bleach-cycles", "3",
                 "--offset-spread", "2", "--read-noise-spread", "0.3", "--drift", "80"])
    assert code == 0
    truth = read_localizations(tmp_path / "sim" / "truth.csv")
    assert {"emitter", "drift_x_nm", "drift_y_nm"} <= set(truth.columns)
    runs = truth.groupby("emitter")["frame"].nunique()
    assert runs.max() > 1  # fluorophores stay on over several frames
    assert truth[["drift_x_nm", "drift_y_nm"]].abs().to_numpy().max() <= 80 + 1e-6
    assert main(["simulate", str(tmp_path / "bad"), "--on-time", "3",
                 "--bleach-cycles", "0.5"]) == 2


def test_jobs_warn_when_the_camera_preset_does_not_fit_the_data(tmp_path, capsys):
    import tifffile

    assert main(["simulate", str(tmp_path / "sim"), "--frames", "30", "--size", "48"]) == 0
    plain = tmp_path / "plain.tif"  # no camera metadata: the preset alone decides
    tifffile.imwrite(plain, tifffile.imread(tmp_path / "sim" / "stack.tif"))
    capsys.readouterr()
    assert main(["localize", str(plain), "-o", str(tmp_path / "a.csv"), "--camera",
                 "EMCCD"]) == 0
    wrong = capsys.readouterr().err
    assert "warning: camera sensitivity" in wrong and "check the camera preset" in wrong
    assert main(["localize", str(plain), "-o", str(tmp_path / "b.csv"), "--camera", "sCMOS",
                 "--pixel-size", "100"]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_posterior_of_several_stacks_in_one_command(simulated, untrained_weights, tmp_path):
    import shutil

    import torch

    from napari_smlm_diffusion.models.denoiser import ConditionalDenoiser
    from napari_smlm_diffusion.pretrained import save_weights

    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(channels=(8, 8, 8), embed_dim=8)
    weights = tmp_path / "den.safetensors"
    save_weights(denoiser, weights, denoiser_card(denoiser.config, untrained_weights))
    second = tmp_path / "second.tif"
    shutil.copy(simulated / "stack.tif", second)
    options = ["--frames", "1-2", "--samples", "2", "--steps", "2", "--weights",
               str(untrained_weights), "--denoiser-weights", str(weights)]
    assert main(["posterior", str(simulated / "stack.tif"), str(second), "-o",
                 str(tmp_path / "both"), *options]) == 0
    assert main(["posterior", str(second), "-o", str(tmp_path / "alone"), *options]) == 0
    for name in ("mean.tif", "std.tif", "localizations.csv"):
        assert (tmp_path / "both" / "stack" / name).is_file()
        assert (tmp_path / "both" / "second" / name).read_bytes() == \
            (tmp_path / "alone" / name).read_bytes(), name
    assert main(["posterior", str(second), str(second), "-o", str(tmp_path / "x"),
                 *options]) == 2  # same name twice: outputs would collide


def test_kde_sum_corrected_by_a_drift_curve(simulated, untrained_weights, tmp_path):
    import tifffile
    from scipy.ndimage import shift

    from napari_smlm_diffusion.postprocess.drift_curve import read_drift_curve, write_drift_curve

    stack = str(simulated / "stack.tif")
    options = ["--frames", "1-4", "--weights", str(untrained_weights), "--sum"]
    assert main(["kde", stack, "-o", str(tmp_path / "plain.tif"), *options]) == 0
    plain = tifffile.imread(tmp_path / "plain.tif").astype(float)
    n_frames = tifffile.imread(stack).shape[0]
    with open_stack(tmp_path / "plain.tif") as image:
        fine_nm = image.pixel_size_nm
    still = write_drift_curve(tmp_path / "still.csv", np.zeros((n_frames, 2)))
    np.testing.assert_array_equal(read_drift_curve(still), np.zeros((n_frames, 2)))
    assert main(["kde", stack, "-o", str(tmp_path / "still.tif"), *options, "--drift",
                 str(still)]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "still.tif"), plain, atol=1e-4)
    moved = write_drift_curve(tmp_path / "moved.csv", np.tile([2 * fine_nm, 0.0], (n_frames, 1)))
    assert main(["kde", stack, "-o", str(tmp_path / "moved.tif"), *options, "--drift",
                 str(moved)]) == 0
    expected = shift(plain, (0, -2), order=3, mode="constant")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "moved.tif")[:, 4:-4],
                               expected[:, 4:-4], atol=1e-3)
    (tmp_path / "bad.csv").write_text("frame,x\n1,2\n")
    assert main(["kde", stack, "-o", str(tmp_path / "bad.tif"), *options, "--drift",
                 str(tmp_path / "bad.csv")]) == 2
    assert main(["kde", stack, "-o", str(tmp_path / "nosum.tif"), "--frames", "1-2",
                 "--weights", str(untrained_weights), "--drift", str(still)]) == 2


def test_localize_and_kde_of_several_stacks_equal_one_by_one(simulated, tmp_path, capsys,
                                                             monkeypatch):
    import shutil

    from napari_smlm_diffusion.pipeline import KdeEngine

    stack = str(simulated / "stack.tif")
    (tmp_path / "in").mkdir()
    second = str(shutil.copy(simulated / "stack.tif", tmp_path / "in" / "second.tif"))
    loads = []
    load = KdeEngine.load.__func__
    monkeypatch.setattr(KdeEngine, "load", classmethod(
        lambda cls, *args, **kwargs: loads.append(1) or load(cls, *args, **kwargs)))
    options = ["--frames", "1-3", "--device", "cpu"]
    assert main(["localize", stack, second, "-o", str(tmp_path / "both"), *options]) == 0
    assert len(loads) == 1  # the model is loaded once for both stacks
    assert main(["kde", stack, second, "-o", str(tmp_path / "both"), *options]) == 0
    for path, name in ((stack, "stack"), (second, "second")):
        assert main(["localize", path, "-o", str(tmp_path / f"{name}.csv"), *options]) == 0
        assert main(["kde", path, "-o", str(tmp_path / f"{name}.tif"), *options]) == 0
        for suffix in (".csv", ".tif"):
            assert (tmp_path / "both" / f"{name}{suffix}").read_bytes() == \
                (tmp_path / f"{name}{suffix}").read_bytes(), name + suffix
    assert len(read_localizations(tmp_path / "both" / "stack.csv")) > 0
    capsys.readouterr()
    assert main(["localize", second, second, "-o", str(tmp_path / "x"), *options]) == 2
    assert "share a name" in capsys.readouterr().err
    # the folder of the inputs as OUT_DIR: stack.tif would be replaced by its own KDEs
    assert main(["kde", stack, second, "-o", str(simulated), *options]) == 2
    assert "would replace the input stack" in capsys.readouterr().err
    assert main(["kde", stack, second, "-o", str(tmp_path / "d"), "--sum", "--drift",
                 str(tmp_path / "curve.csv")]) == 2
    assert "give one stack" in capsys.readouterr().err
