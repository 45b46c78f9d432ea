"""Fault campaign: bad inputs, bad options and machine faults, through the CLI and the Python API.

Every fault must end with one line on stderr saying what was wrong (and, where it is not obvious,
what was expected), no traceback, a non-zero exit code, and no output file changed: each run
writes over a "previous output" that must survive byte for byte, and no temporary file may be
left next to it. Inputs that are odd but valid (a single 2-D frame, a T/Z hyperstack, all-zero or
saturated frames) must work, with a warning where the data cannot give molecules.

The per-module tests (test_io, test_cli, test_pipeline, test_camera) pin the individual checks;
this module drives them end to end, table-driven.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from card_helpers import denoiser_card, kde_card
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.cli import main
from napari_smlm_diffusion.devices import Cancelled
from napari_smlm_diffusion.io import open_stack, write_tiff, write_tiff_frames
from napari_smlm_diffusion.models.denoiser import ConditionalDenoiser
from napari_smlm_diffusion.models.kde_cnn import KdeCnn
from napari_smlm_diffusion.pipeline import KdeEngine, iter_kde, run_kde
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings, run_posterior
from napari_smlm_diffusion.pretrained import save_weights
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack

PREVIOUS = b"previous output, must survive a failed run"
NO_CUDA = not torch.cuda.is_available()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def good() -> np.ndarray:
    """Five 16x16 uint16 frames with molecules (sCMOS counts)."""
    frames = simulate_stack(5, SimulationConfig(size=(16, 16), density=3.0), seed=3).frames
    return np.asarray(frames, dtype=np.uint16)


def _default_tifffile(path: Path, data: np.ndarray) -> None:
    with warnings.catch_warnings():  # tifffile says its default will change; that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(path, data)


def _two_channels(data: np.ndarray) -> np.ndarray:
    """A 5-D TZCYX hyperstack (2 x 2 x 2 channels): channel 0 holds frames 0-3, channel 1 the
    frames 1-4 halved."""
    first, second = data[:4].reshape(2, 2, 16, 16), (data[1:5] // 2).reshape(2, 2, 16, 16)
    return np.stack([first, second], axis=2)


def _truncated(path: Path, data: np.ndarray) -> None:
    tifffile.imwrite(path, data)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


def _with_nonfinite(value: float):
    def write(path: Path, data: np.ndarray) -> None:
        frames = data.astype(np.float32)
        frames[2, 5, 6] = value
        tifffile.imwrite(path, frames)
    return write


# name -> writer(path, good frames); every file is called <name>.tif
INPUTS = {
    "good": lambda p, d: tifffile.imwrite(p, d),
    "directory": lambda p, d: p.mkdir(),
    "empty": lambda p, d: p.write_bytes(b""),
    "text": lambda p, d: p.write_bytes(b"frame,x [nm],y [nm]\n1,20.5,33.1\n" * 20),
    "truncated": _truncated,
    "rgb": lambda p, d: tifffile.imwrite(p, np.zeros((16, 16, 3), np.uint8), photometric="rgb"),
    "rgba": lambda p, d: tifffile.imwrite(p, np.zeros((16, 16, 4), np.uint8),
                                          photometric="rgb", extrasamples=["unassalpha"]),
    # tifffile's default for a (3, rows, cols) array is planar RGB: a mislabelled 3-frame stack
    "three_frames_as_rgb": lambda p, d: _default_tifffile(p, d[:3]),
    "channels": lambda p, d: tifffile.imwrite(p, _two_channels(d), imagej=True,
                                              metadata={"axes": "TZCYX"}),
    "six_d": lambda p, d: tifffile.imwrite(p, np.zeros((2, 2, 2, 2, 16, 16), np.uint16)),
    "nan": _with_nonfinite(np.nan),
    "inf": _with_nonfinite(np.inf),
    "tiny_frames": lambda p, d: tifffile.imwrite(p, d[:, :4, :4], photometric="minisblack"),
    "zero": lambda p, d: tifffile.imwrite(p, np.zeros_like(d)),
    "saturated": lambda p, d: tifffile.imwrite(p, np.full_like(d, 65535)),
    "single": lambda p, d: tifffile.imwrite(p, d[0]),
    "tz": lambda p, d: tifffile.imwrite(p, np.stack([d[:2], d[2:4]]), imagej=True,
                                        metadata={"axes": "TZYX"}),
}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, good):
    """Input files, tiny weights (KDE CNN and denoiser) and an output folder."""
    root = tmp_path_factory.mktemp("faults")
    inputs = root / "inputs"
    inputs.mkdir()
    paths = {}
    for name, writer in INPUTS.items():
        paths[name] = inputs / f"{name}.tif"
        writer(paths[name], good)
    paths["missing"] = inputs / "missing.tif"

    torch.manual_seed(0)
    kde = KdeCnn(width=8, dilations=(1, 2), up_channels=(4, 2))
    weights = root / "weights" / "tiny.safetensors"
    save_weights(kde, weights, kde_card(kde.config))
    denoiser = ConditionalDenoiser(channels=(8, 8, 8), embed_dim=8)
    denoiser_weights = root / "weights" / "den.safetensors"
    save_weights(denoiser, denoiser_weights, denoiser_card(denoiser.config, weights))
    altered = root / "weights" / "altered.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    altered.write_bytes(bytes(data))
    shutil.copy(weights.with_suffix(".json"), altered.with_suffix(".json"))
    wrong = root / "weights" / "wrong.safetensors"  # the denoiser's file given as KDE CNN
    shutil.copy(denoiser_weights, wrong)
    shutil.copy(denoiser_weights.with_suffix(".json"), wrong.with_suffix(".json"))
    return SimpleNamespace(root=root, inputs=paths, weights=weights,
                           denoiser=denoiser_weights, altered=altered, wrong=wrong)


@pytest.fixture
def out(tmp_path):
    """Previous outputs: a TIFF, a CSV and a posterior folder, with known bytes."""
    folder = tmp_path / "out"
    folder.mkdir()
    post = folder / "post"
    post.mkdir()
    paths = SimpleNamespace(tif=folder / "kde.tif", csv=folder / "locs.csv", dir=post,
                            folder=folder)
    for path in (paths.tif, paths.csv, post / "mean.tif", post / "std.tif",
                 post / "localizations.csv"):
        path.write_bytes(PREVIOUS)
    return paths


def run_cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_info:  # argparse errors
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, fragments, expected_code=2):
    """One error line (warnings about the data, ``smlm-diffusion: warning: ...``, may come
    before it: a job that starts warns about what it sees)."""
    lines = [line for line in err.splitlines()
             if line.strip() and not line.startswith("smlm-diffusion: warning:")]
    assert code == expected_code, err
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert "error:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def assert_outputs_intact(out, kept: tuple[str, ...] = ()):
    """Previous outputs unchanged, no temporary file left; ``kept``: other expected entries."""
    for path in (out.tif, out.csv, out.dir / "mean.tif", out.dir / "std.tif",
                 out.dir / "localizations.csv"):
        assert path.read_bytes() == PREVIOUS, f"{path} was changed"
    leftovers = [p.name for p in out.folder.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    assert sorted(p.name for p in out.dir.iterdir()) == sorted(
        ["localizations.csv", "mean.tif", "std.tif", *kept])


# ----------------------------------------------------------------------------- the table

# (argv with {placeholders}, fragments the one error line must contain)
KDE = ["kde", "{input}", "-o", "{tif}", "--weights", "{weights}"]
LOC = ["localize", "{input}", "-o", "{csv}", "--weights", "{weights}"]
POST = ["posterior", "{input}", "-o", "{dir}", "--weights", "{weights}", "--denoiser-weights",
        "{denoiser}", "--samples", "2", "--steps", "1"]


def case(argv, input_name, fragments, id):
    return pytest.param(argv, input_name, fragments, id=id)


CLI_FAULTS = [
    # the input file
    case(KDE, "missing", ["missing.tif", "file does not exist"], "missing-file"),
    case(KDE, "directory", ["directory.tif", "is a directory, not a file"], "directory"),
    case(LOC, "empty", ["empty.tif", "file is empty (0 bytes)"], "empty-file"),
    case(KDE, "text", ["text.tif", "not a readable TIFF file"], "not-a-tiff"),
    case(KDE, "truncated", ["truncated.tif", "truncated or corrupted"], "truncated-tiff"),
    case(KDE, "rgb", ["rgb.tif", "3 samples per pixel", "expected grayscale"], "rgb"),
    case(KDE, "rgba", ["rgba.tif", "4 samples per pixel", "expected grayscale"], "rgba"),
    case(KDE, "three_frames_as_rgb", ["if these are 3 frames", "minisblack"],
         "3-frame-stack-tagged-rgb"),
    case(KDE, "channels", ["2 channels", "--channel"], "5d-channels-not-chosen"),
    case(KDE + ["--channel", "2"], "channels", ["channel=2 is out of range"],
         "5d-channel-out-of-range"),
    case(KDE, "six_d", ["6-D", "max 5-D"], "6d"),
    case(KDE, "nan", ["nan.tif", "frame 2 contains 1 NaN or infinite"], "float-nan"),
    case(LOC, "inf", ["inf.tif", "frame 2 contains 1 NaN or infinite"], "float-inf"),
    case(LOC, "tiny_frames", ["4x4 pixels are smaller than the PSF support",
                              "expected frames of at least 9x9"], "frames-smaller-than-psf"),
    case(LOC + ["--psf-sigma", "5000"], "good", ["smaller than the PSF support",
                                                 "check the PSF sigma"], "absurd-psf-sigma"),
    # frame ranges
    case(KDE + ["--frames", "2-9"], "good", ["frames '2-9' lie outside the stack",
                                             "it has frames 1-5"], "frames-beyond-end"),
    case(KDE + ["--frames", "0-2"], "good", ["outside the stack", "1 <= A <= B <= 5"],
         "frames-from-zero"),
    case(LOC + ["--frames", "4-2"], "good", ["first frame comes after the last",
                                             "1 <= A <= B <= 5"], "frames-reversed"),
    case(KDE + ["--frames", "x"], "good", ["expected A-B"], "frames-not-a-number"),
    # absurd camera values
    case(LOC + ["--baseline", "1e9"], "good", ["baseline", "between -1e+06 and 1e+06"],
         "camera-baseline-absurd"),
    case(KDE + ["--baseline", "nan"], "good", ["baseline=nan is invalid"], "camera-baseline-nan"),
    case(KDE + ["--em-gain", "0.5"], "good", ["em_gain=0.5", ">= 1 (use 1 for sCMOS)"],
         "camera-em-gain-below-1"),
    case(KDE + ["--em-gain", "1e6"], "good", ["em_gain", "<= 10000"], "camera-em-gain-absurd"),
    case(KDE + ["--quantum-efficiency", "2"], "good", ["quantum_efficiency=2.0",
                                                       "in (0, 1]"], "camera-qe-above-1"),
    case(KDE + ["--read-noise", "-1"], "good", ["read_noise=-1.0", ">= 0"],
         "camera-read-noise-negative"),
    case(KDE + ["--pixel-size", "1e7"], "good", ["pixel_size", "<= 10000 nm"],
         "camera-pixel-size-in-wrong-unit"),
    case(KDE + ["--sensitivity", "inf"], "good", ["--sensitivity", "expected a number > 0"],
         "camera-sensitivity-inf"),
    case(KDE + ["--sensitivity", "0"], "good", ["expected a number > 0"],
         "camera-sensitivity-zero"),
    # posterior options
    case(POST[:-4] + ["--samples", "0"], "good", ["--samples", "expected an integer >= 1"],
         "posterior-samples-0"),
    case(POST[:-4] + ["--samples", "-2"], "good", ["expected an integer >= 1"],
         "posterior-samples-negative"),
    case(POST[:-4] + ["--steps", "0"], "good", ["--steps", "expected an integer >= 1"],
         "posterior-steps-0"),
    case(POST + ["--keep-samples", "5"], "good", ["keep_samples must be between 0 and samples"],
         "posterior-keep-more-than-samples"),
    case(KDE + ["--batch-size", "0"], "good", ["--batch-size", "expected an integer >= 1"],
         "batch-size-0"),
    # tables
    case(["evaluate", "{input}", "{input}"], "text",
         ["text.tif", "column 'frame' holds non-numeric values"],
         "evaluate-not-a-localization-table"),
    case(["evaluate", "{input}", "{input}"], "good", ["good.tif", "not a readable CSV"],
         "evaluate-binary-file"),
    # the output path
    case(["kde", "{input}", "-o", "{folder}/no such folder/kde.tif", "--weights", "{weights}"],
         "good", ["no such folder/kde.tif", "folder", "does not exist"], "output-folder-missing"),
    case(["kde", "{tif}", "-o", "{folder}/../out/kde.tif", "--weights", "{weights}"], "good",
         ["the output would replace the input stack"], "output-is-the-input"),
    case(["kde", "{input}", "-o", "{folder}", "--weights", "{weights}"], "good",
         ["it is a folder; expected a file name"], "output-is-a-folder"),
    case(POST[:3] + ["{tif}"] + POST[4:], "good", ["it is a file; expected a folder"],
         "posterior-output-is-a-file"),
    # weights and devices
    case(KDE[:-1] + ["{root}/none.safetensors"], "good", ["none.safetensors not found"],
         "weights-missing"),
    case(KDE[:-1] + ["{altered}"], "good", ["does not match its model card",
                                            "altered or corrupt"], "weights-altered"),
    case(KDE[:-1] + ["{wrong}"], "good", ["does not describe a KdeCnn"],
         "weights-of-another-model"),
    case(KDE[:-1] + ["{root}/model.pt"], "good", ["expected a shipped model name",
                                                  "never loaded"], "weights-pt-file"),
    case(KDE[:-1] + ["no_such_model"], "good", ["expected a shipped model name"],
         "weights-unknown-name"),
    pytest.param(KDE + ["--device", "cuda"], "good", ["cuda", "not available", "available:"],
                 id="cuda-requested-without-gpu",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="a CUDA device exists here")),
    case(KDE + ["--device", "tpu"], "good", ["unknown device 'tpu'", "expected one of"],
         "unknown-device"),
]


@pytest.mark.parametrize(("argv", "input_name", "fragments"), CLI_FAULTS)
def test_cli_fault_is_one_line_and_changes_no_output(ctx, out, capsys, argv, input_name,
                                                     fragments):
    values = {"input": ctx.inputs[input_name], "tif": out.tif, "csv": out.csv, "dir": out.dir,
              "folder": out.folder, "weights": ctx.weights, "denoiser": ctx.denoiser,
              "altered": ctx.altered, "wrong": ctx.wrong, "root": ctx.root}
    code, stdout, err = run_cli([a.format(**values) for a in argv], capsys)
    assert_one_line_error(code, err, fragments)
    assert stdout == ""
    assert_outputs_intact(out)


def test_errors_in_a_real_process_show_no_traceback(ctx, tmp_path):
    """The installed command, not just main(): exit code and stderr as a user sees them."""
    command = [sys.executable, "-m", "napari_smlm_diffusion.cli"]
    result = subprocess.run(
        [*command, "localize", str(ctx.inputs["truncated"]), "-o", str(tmp_path / "l.csv"),
         "--weights", str(ctx.weights)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "truncated or corrupted" in result.stderr
    assert not (tmp_path / "l.csv").exists()


# ----------------------------------------------------------------------------- odd but valid


def _kde_frames(path: Path) -> np.ndarray:
    with open_stack(path) as stack:
        return np.asarray(stack.data[:])


@pytest.mark.parametrize(("input_name", "frames", "notice"), [
    pytest.param("single", 1, None, id="2d-image-is-one-frame"),
    pytest.param("tz", 4, "axes TZ (2x2) are read as 4 frames in file order",
                 id="4d-tz-hyperstack-collapsed-in-file-order"),
])
def test_valid_shapes_work(ctx, tmp_path, capsys, input_name, frames, notice):
    output = tmp_path / "kde.tif"
    code, stdout, err = run_cli(["kde", ctx.inputs[input_name], "-o", output, "--weights",
                                 ctx.weights], capsys)
    assert code == 0, err
    assert _kde_frames(output).shape == (frames, 64, 64)
    if notice:
        assert notice in err
    else:
        assert err == ""


def test_5d_stack_uses_the_chosen_channel(ctx, good, tmp_path, capsys):
    outputs = []
    for channel in (0, 1):
        output = tmp_path / f"c{channel}.tif"
        code, _, err = run_cli(["kde", ctx.inputs["channels"], "-o", output, "--weights",
                                ctx.weights, "--channel", channel], capsys)
        assert code == 0, err
        outputs.append(_kde_frames(output))
    # T and Z are read as 4 frames; the KDEs are those of the chosen channel's frames
    engine = KdeEngine.load(str(ctx.weights), device="cpu")
    np.testing.assert_allclose(outputs[0], engine.predict(good[:4], preset("sCMOS")), atol=1e-5)
    np.testing.assert_allclose(outputs[1], engine.predict(good[1:5] // 2, preset("sCMOS")),
                               atol=1e-5)


@pytest.mark.parametrize(("input_name", "warning"), [
    pytest.param("zero", "frame 1: every pixel is at or below the camera baseline (100 ADU)",
                 id="all-zero-frames"),
    pytest.param("saturated", "frame 1: 256 of 256 pixels are saturated (65535 ADU",
                 id="saturated-frames"),
])
def test_frames_without_molecules_warn_once_and_still_write(ctx, tmp_path, capsys, input_name,
                                                             warning):
    output = tmp_path / "locs.csv"
    code, stdout, err = run_cli(["localize", ctx.inputs[input_name], "-o", output, "--weights",
                                 ctx.weights], capsys)
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and warning in lines[0] and "not reported" in lines[0]
    assert "0 localizations from 5 frames" in stdout
    assert output.read_text().startswith('"id","frame","x [nm]"')


def test_camera_values_from_metadata_are_data_not_code(ctx, good, tmp_path, capsys):
    """Non-numeric camera values and paths in a file's metadata are ignored with a warning."""
    path = tmp_path / "meta.tif"
    marker = tmp_path / "executed"
    write_tiff(path, good, pixel_size_nm=100.0, metadata={
        "baseline": f"100; touch {marker}", "em_gain": "__import__('os')", "read_noise": None,
        "weights": str(ctx.altered), "psf_sigma_nm": "$(reboot)"})
    output = tmp_path / "kde.tif"
    code, _, err = run_cli(["kde", path, "-o", output, "--weights", ctx.weights, "--sum"],
                           capsys)
    assert code == 0, err
    assert "ignoring camera baseline=" in err and "ignoring camera em_gain=" in err
    assert "ignoring psf_sigma_nm" in err
    assert not marker.exists()
    with open_stack(output) as result:  # defaults used: preset camera, the --weights model
        assert result.metadata["camera"]["baseline"] == 100.0
        assert result.metadata["camera"]["em_gain"] == 1.0


# ----------------------------------------------------------------------------- machine faults


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _partial_then_enospc(file, *args, **kwargs):
    with open(file, "wb") as handle:
        handle.write(b"II*\x00 partial data")
    _enospc()


@pytest.mark.parametrize("argv", [
    pytest.param(["kde", "{input}", "-o", "{tif}", "--sum"], id="kde-sum"),
    pytest.param(["kde", "{input}", "-o", "{tif}"], id="kde-streamed-frames"),
    pytest.param(["localize", "{input}", "-o", "{csv}"], id="localize-csv"),
])
def test_full_disk_keeps_the_previous_output(ctx, out, capsys, monkeypatch, argv):
    monkeypatch.setattr(tifffile, "imwrite", _partial_then_enospc)
    monkeypatch.setattr(pd.DataFrame, "to_csv", _enospc)
    values = {"input": ctx.inputs["good"], "tif": out.tif, "csv": out.csv}
    code, _, err = run_cli([a.format(**values) for a in argv] + ["--weights", ctx.weights],
                           capsys)
    target = out.csv if argv[0] == "localize" else out.tif
    assert_one_line_error(code, err, [str(target), "the disk is full (no space left on device)"])
    assert_outputs_intact(out)


def test_full_disk_during_posterior_keeps_every_previous_file(ctx, out, capsys, monkeypatch):
    """The posterior writes several files: none replaces its predecessor unless all succeed."""
    real = tifffile.imwrite
    calls = []

    def second_write_fails(file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 2:
            _partial_then_enospc(file)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", second_write_fails)
    code, _, err = run_cli(["posterior", ctx.inputs["good"], "-o", out.dir, "--frames", "1",
                            "--samples", "2", "--steps", "1", "--weights", ctx.weights,
                            "--denoiser-weights", ctx.denoiser], capsys)
    assert_one_line_error(code, err, ["std.tif", "the disk is full"])
    assert len(calls) == 2  # mean.tif was written completely, then std.tif failed
    # the sampled frames stay in the hidden partial folder: --resume publishes them
    assert_outputs_intact(out, kept=(".posterior-partial",))
    monkeypatch.setattr(tifffile, "imwrite", real)
    code, printed, _ = run_cli(["posterior", ctx.inputs["good"], "-o", out.dir, "--frames", "1",
                                "--samples", "2", "--steps", "1", "--weights", ctx.weights,
                                "--denoiser-weights", ctx.denoiser, "--resume"], capsys)
    assert code == 0 and "resumed after frame 1 of 1" in printed
    assert sorted(p.name for p in out.dir.iterdir()) == [
        "localizations.csv", "mean.tif", "std.tif", "sum_mean.tif", "sum_std.tif"]


def test_full_disk_during_simulate_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pd.DataFrame, "to_csv", _enospc)  # truth.csv, after stack.tif
    folder = tmp_path / "sim"
    code, _, err = run_cli(["simulate", folder, "--frames", "2", "--size", "16"], capsys)
    assert_one_line_error(code, err, ["truth.csv", "the disk is full"])
    assert not folder.exists()


def test_permission_denied_at_write_time_is_one_line(ctx, out, capsys, monkeypatch):
    """(As root the up-front check cannot see permissions: the write-time error must be clear.)"""
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tifffile, "imwrite", denied)
    code, _, err = run_cli(["kde", ctx.inputs["good"], "-o", out.tif, "--weights",
                            ctx.weights], capsys)
    assert_one_line_error(code, err, [str(out.tif), "permission denied"])
    assert_outputs_intact(out)


def test_read_only_folder_is_refused_before_any_work(ctx, out, capsys, monkeypatch):
    """(The folder's permission is simulated: as root every folder is writable.)"""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        return Path(path) != out.folder and real_access(path, mode, *args, **kwargs)

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded although the output cannot be written")

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(KdeEngine, "load", no_work)
    code, _, err = run_cli(["kde", ctx.inputs["good"], "-o", out.tif, "--weights",
                            ctx.weights], capsys)
    assert_one_line_error(code, err, [str(out.tif), "permission denied", "is not writable"])
    assert_outputs_intact(out)


@pytest.mark.parametrize("k", random.Random(7).sample(range(1, 5), 2))
def test_interrupt_after_k_batches_writes_nothing(ctx, out, capsys, monkeypatch, k):
    real = KdeEngine.predict
    calls = []

    def predict(self, frames, camera):
        calls.append(len(frames))
        if len(calls) > k:
            raise KeyboardInterrupt
        return real(self, frames, camera)

    monkeypatch.setattr(KdeEngine, "predict", predict)
    code, _, err = run_cli(["kde", ctx.inputs["good"], "-o", out.tif, "--weights", ctx.weights,
                            "--batch-size", "1"], capsys)
    assert code == 130
    assert err.strip() == "smlm-diffusion: interrupted; no output was written"
    assert len(calls) == k + 1
    assert_outputs_intact(out)


@pytest.mark.parametrize(("error", "code", "fragments"), [
    pytest.param(MemoryError(), 2, ["out of memory", "smaller --batch-size"], id="out-of-ram"),
    pytest.param(torch.OutOfMemoryError("DefaultCPUAllocator: can't allocate memory:\n"
                                        "you tried to allocate 9 GB"), 2,
                 ["out of memory (DefaultCPUAllocator: can't allocate memory: you tried",
                  "use a smaller --batch-size"], id="torch-oom-on-cpu"),
    pytest.param(TypeError("unsupported operand"), 1,
                 ["internal error TypeError: unsupported operand", "--debug"], id="a-bug"),
])
def test_unexpected_failures_are_one_line(ctx, out, capsys, monkeypatch, error, code,
                                          fragments):
    def predict(self, frames, camera):
        raise error

    monkeypatch.setattr(KdeEngine, "predict", predict)
    result, _, err = run_cli(["kde", ctx.inputs["good"], "-o", out.tif, "--weights",
                              ctx.weights], capsys)
    assert_one_line_error(result, err, fragments, expected_code=code)
    assert_outputs_intact(out)


def test_debug_option_shows_the_traceback(ctx, out, capsys, monkeypatch):
    def predict(self, frames, camera):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(KdeEngine, "predict", predict)
    code, _, err = run_cli(["--debug", "kde", ctx.inputs["good"], "-o", out.tif, "--weights",
                            ctx.weights], capsys)
    assert code == 1
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("smlm-diffusion kde")


# ----------------------------------------------------------------------------- device memory


def _fake_gpu(engine: KdeEngine, monkeypatch, max_batch: int) -> list:
    """Pretend ``engine`` is on a GPU that holds at most ``max_batch`` frames (0: none); the
    computation itself runs on the CPU."""
    calls = []

    def forward(self, inputs):
        calls.append((self.device.type, len(inputs)))
        if self.device.type == "cuda" and len(inputs) > max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        with torch.inference_mode():
            return self.model(inputs.cpu())

    monkeypatch.setattr(KdeEngine, "_forward", forward)
    engine.device = torch.device("cuda")
    return calls


@pytest.mark.parametrize(("max_batch", "messages", "device"), [
    pytest.param(2, ["out of cuda memory: retrying with batch 2"], "cuda", id="smaller-batches"),
    pytest.param(0, ["out of cuda memory: retrying with batch 2",
                     "out of cuda memory: retrying with batch 1",
                     "out of cuda memory even for one frame: continuing on the CPU"], "cpu",
                 id="cpu-fallback"),
])
def test_device_out_of_memory_falls_back_and_gives_the_same_result(ctx, good, monkeypatch,
                                                                  max_batch, messages, device):
    camera = preset("sCMOS")
    reference = KdeEngine.load(str(ctx.weights), device="cpu").predict(good, camera)
    notes = []
    engine = KdeEngine.load(str(ctx.weights), device="cpu", notify=notes.append)
    _fake_gpu(engine, monkeypatch, max_batch)
    result = engine.predict(good, camera)
    assert notes == messages
    assert engine.device.type == device
    np.testing.assert_allclose(result, reference, atol=1e-5)


def test_device_out_of_memory_through_the_command(ctx, good, tmp_path, capsys, monkeypatch):
    reference = tmp_path / "reference.tif"
    assert main(["kde", str(ctx.inputs["good"]), "-o", str(reference), "--weights",
                 str(ctx.weights), "--sum"]) == 0
    real_load = KdeEngine.load.__func__

    def load_on_fake_gpu(cls, *args, **kwargs):
        engine = real_load(cls, *args, **kwargs)
        _fake_gpu(engine, monkeypatch, 2)
        return engine

    monkeypatch.setattr(KdeEngine, "load", classmethod(load_on_fake_gpu))
    output = tmp_path / "sum.tif"
    capsys.readouterr()
    code, _, err = run_cli(["kde", ctx.inputs["good"], "-o", output, "--weights", ctx.weights,
                            "--sum"], capsys)
    assert code == 0
    assert err.strip() == "smlm-diffusion: out of cuda memory: retrying with batch 2"
    np.testing.assert_allclose(_kde_frames(output), _kde_frames(reference), rtol=1e-5,
                               atol=1e-4)


# ----------------------------------------------------------------------------- cancel (API)


@pytest.mark.parametrize("k", random.Random(11).sample(range(1, 5), 2))
def test_cancel_after_k_batches_raises_and_writes_nothing(ctx, good, tmp_path, k):
    engine = KdeEngine.load(str(ctx.weights), device="cpu")
    done = []
    with pytest.raises(Cancelled):
        run_kde(good, preset("sCMOS"), engine, batch_size=1,
                progress=lambda n, total: done.append(n), should_stop=lambda: len(done) >= k)
    assert done == list(range(1, k + 1))

    # streaming KDEs to a file (what `kde` does): a cancel leaves the previous file
    output = tmp_path / "kdes.tif"
    output.write_bytes(PREVIOUS)

    def frames():
        for count, batch in enumerate(iter_kde(good, preset("sCMOS"), engine, batch_size=1)):
            if count == k:
                raise Cancelled("cancelled by the user")
            yield from batch.kdes

    with pytest.raises(Cancelled):
        write_tiff_frames(output, frames(), (5, 64, 64), pixel_size_nm=25.0)
    assert output.read_bytes() == PREVIOUS
    assert [p.name for p in tmp_path.iterdir()] == ["kdes.tif"]


def test_cancel_posterior_after_one_frame(ctx, good):
    engine = PosteriorEngine.load(str(ctx.weights), str(ctx.denoiser), "cpu", notify=print)
    done = []
    with pytest.raises(Cancelled):
        run_posterior(good, preset("sCMOS"), engine, range(3), PosteriorSettings(2, 1),
                      progress=lambda n, total: done.append(n), should_stop=lambda: bool(done))
    assert done == [1]


# ----------------------------------------------------------------------------- API checks


@pytest.mark.parametrize(("kwargs", "match"), [
    pytest.param({"samples": 0}, "samples must be >= 1", id="samples-0"),
    pytest.param({"steps": 0}, "steps must be >= 1", id="steps-0"),
    pytest.param({"steps": -5}, "steps must be >= 1", id="steps-negative"),
    pytest.param({"sampler": "euler"}, "unknown sampler", id="unknown-sampler"),
])
def test_posterior_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PosteriorSettings(**kwargs)


@pytest.mark.parametrize(("stack_shape", "kwargs", "match"), [
    pytest.param((3, 5, 5), {}, "smaller than the PSF support", id="small-frames"),
    pytest.param((3, 16, 16), {"frames": range(2, 6)}, "outside the stack", id="frame-range"),
    pytest.param((3, 16, 16), {"psf_sigma_nm": float("inf")}, "PSF sigma inf nm is invalid",
                 id="psf-sigma-inf"),
    pytest.param((16, 16), {}, "expected a stack of frames", id="2d-array"),
    pytest.param((3, 16, 16), {"batch_size": 0}, "batch size must be >= 1", id="batch-0"),
])
def test_iter_kde_refuses_bad_requests_before_any_work(ctx, stack_shape, kwargs, match):
    engine = KdeEngine.load(str(ctx.weights), device="cpu")
    with pytest.raises(ValueError, match=match):
        next(iter_kde(np.full(stack_shape, 120, np.uint16), preset("sCMOS"), engine, **kwargs))


def test_model_card_problems_are_weights_errors(ctx, tmp_path):
    from napari_smlm_diffusion.pretrained import WeightsError, load_kde_cnn

    cases = {"list": [1, 2], "no_arch": {"sha256": None},
             "no_threshold": {"architecture": {"width": 8, "dilations": [1, 2],
                                               "up_channels": [4, 2]}}}
    for name, card in cases.items():
        weights = tmp_path / f"{name}.safetensors"
        shutil.copy(ctx.weights, weights)
        if isinstance(card, dict):
            card = {**card, "sha256": json.loads(ctx.weights.with_suffix(".json").read_text())[
                "sha256"]}
        weights.with_suffix(".json").write_text(json.dumps(card))
        with pytest.raises(WeightsError) as error:
            load_kde_cnn(weights)
        assert "\n" not in str(error.value) and name in str(error.value)
