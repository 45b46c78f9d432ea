"""``smlm-diffusion posterior --drift CURVE.csv``: summed posterior maps of drift-corrected
frames (as ``kde --sum --drift``), per-frame maps untouched, bad curves refused before any work."""

import numpy as np
import pytest
import tifffile
import torch
from scipy.ndimage import shift

from card_helpers import denoiser_card
from napari_smlm_diffusion.cli import main
from napari_smlm_diffusion.io import open_stack
from napari_smlm_diffusion.models.denoiser import ConditionalDenoiser
from napari_smlm_diffusion.postprocess.drift_curve import write_drift_curve
from napari_smlm_diffusion.pretrained import save_weights

N_FRAMES = 5
FINE_NM = 40.0  # 160 nm camera pixels, 4x grid


@pytest.fixture
def run(tmp_path, untrained_weights):
    """``run(out, *extra)``: the posterior command on a 5-frame simulated stack (frames 2-5)."""
    assert main(["simulate", str(tmp_path / "sim"), "--frames", str(N_FRAMES), "--size", "32",
                 "--density", "3", "--seed", "4", "--camera", "EMCCD"]) == 0
    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(channels=(8, 8, 8), embed_dim=8)
    for parameter in denoiser.parameters():
        torch.nn.init.normal_(parameter, std=0.1)  # varied samples: a variance that is not flat
    weights = tmp_path / "den.safetensors"
    save_weights(denoiser, weights, denoiser_card(denoiser.config, untrained_weights))

    def command(out, *extra, stacks=(str(tmp_path / "sim" / "stack.tif"),)):
        return main(["posterior", *stacks, "-o", str(out), "--frames", "2-5",
                     "--samples", "3", "--steps", "2", "--weights", str(untrained_weights),
                     "--denoiser-weights", str(weights), *extra])

    return command


def _read(folder, name):
    return tifffile.imread(folder / name).astype(np.float64)


def test_zero_and_constant_drift(run, tmp_path, capsys):
    plain, still, moved = tmp_path / "plain", tmp_path / "still", tmp_path / "moved"
    assert run(plain) == 0
    zero = write_drift_curve(tmp_path / "zero.csv", np.zeros((N_FRAMES, 2)))
    assert run(still, "--drift", str(zero)) == 0
    assert f"drift-corrected with {zero}" in capsys.readouterr().out
    for name in ("sum_mean.tif", "sum_std.tif", "mean.tif", "std.tif"):
        np.testing.assert_array_equal(_read(still, name), _read(plain, name), err_msg=name)
    with open_stack(still / "sum_mean.tif") as image, open_stack(still / "sum_std.tif") as std:
        assert image.metadata["drift_corrected_with"] == str(zero)
        assert std.metadata["drift_corrected_with"] == str(zero)
        assert image.pixel_size_nm == pytest.approx(FINE_NM)
    with open_stack(still / "mean.tif") as image:
        assert "drift_corrected_with" not in image.metadata  # per-frame maps are not shifted

    # every frame drifted 2 fine pixels right, 1 down: the sums move back by (-1, -2)
    constant = np.tile([2 * FINE_NM, 1 * FINE_NM], (N_FRAMES, 1))
    assert run(moved, "--drift", str(write_drift_curve(tmp_path / "c.csv", constant))) == 0
    inner = (slice(4, -4), slice(4, -4))  # away from the zero-filled border
    expected_mean = shift(_read(plain, "sum_mean.tif"), (-1, -2), order=3, mode="constant")
    sum_mean = _read(moved, "sum_mean.tif")
    np.testing.assert_allclose(sum_mean[inner], expected_mean[inner], rtol=1e-5,
                               atol=1e-5 * np.abs(expected_mean).max())
    # the std: sqrt of the sum of the shifted variances
    variance = _read(plain, "std.tif") ** 2
    expected_variance = shift(variance.sum(0), (-1, -2), order=3, mode="constant")
    np.testing.assert_allclose(_read(moved, "sum_std.tif")[inner] ** 2,
                               expected_variance[inner], rtol=1e-4,
                               atol=1e-5 * expected_variance.max())
    assert not np.allclose(sum_mean[inner], _read(plain, "sum_mean.tif")[inner], rtol=1e-2)
    np.testing.assert_array_equal(_read(moved, "mean.tif"), _read(plain, "mean.tif"))


@pytest.mark.parametrize(("frames", "fragment"), [
    (4, "covers frames 1-4 but the frames to sum reach frame 5"),
    (7, "has 7 frames but the stack has 5: it belongs to another acquisition"),
])
def test_wrong_length_curve_is_refused_before_any_output(run, tmp_path, capsys, frames,
                                                         fragment):
    curve = write_drift_curve(tmp_path / "curve.csv", np.zeros((frames, 2)))
    out = tmp_path / "out"
    assert run(out, "--drift", str(curve)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "curve.csv" in err
    assert not out.exists()


def test_unreadable_curve_and_several_stacks_are_refused(run, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("frame,x\n1,2\n")
    assert run(tmp_path / "out", "--drift", str(tmp_path / "bad.csv")) == 2
    assert "needs the columns" in capsys.readouterr().err
    curve = write_drift_curve(tmp_path / "curve.csv", np.zeros((N_FRAMES, 2)))
    stack = tmp_path / "sim" / "stack.tif"
    second = tmp_path / "second.tif"
    second.write_bytes(stack.read_bytes())
    assert run(tmp_path / "out", "--drift", str(curve), stacks=(str(stack), str(second))) == 2
    assert "drift curve of one acquisition" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
