"""Long posterior runs: outputs streamed frame by frame into a hidden partial folder, a stopped
run resumed from its last completed frame with outputs identical to an uninterrupted run."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from card_helpers import denoiser_card
from napari_smlm_diffusion import posterior_sampling
from napari_smlm_diffusion.cli import main
from napari_smlm_diffusion.cli import posterior as cli_posterior
from napari_smlm_diffusion.io import open_stack, read_localizations
from napari_smlm_diffusion.models.denoiser import ConditionalDenoiser
from napari_smlm_diffusion.posterior_outputs import PARTIAL_DIR, STATE_FILE
from napari_smlm_diffusion.pretrained import save_weights

OUTPUTS = ["localizations.csv", "mean.tif", "samples.tif", "std.tif", "sum_mean.tif",
           "sum_std.tif"]


@pytest.fixture
def run(tmp_path, untrained_weights, monkeypatch):
    """``run(out, *extra)``: the posterior command on a 6-frame simulated stack, blocks of two
    frames (so that a resume restarts inside the range), with a small denoiser."""
    assert main(["simulate", str(tmp_path / "sim"), "--frames", "6", "--size", "32", "--density",
                 "3", "--seed", "4"]) == 0
    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(channels=(8, 8, 8), embed_dim=8)
    for parameter in denoiser.parameters():
        torch.nn.init.normal_(parameter, std=0.1)  # a head that is not zero: varied samples
    weights = tmp_path / "den.safetensors"
    save_weights(denoiser, weights, denoiser_card(denoiser.config, untrained_weights,
                                                  detection_threshold=0.05))
    monkeypatch.setitem(posterior_sampling.BLOCK_SAMPLE_PIXELS, "cpu", 2 * 3 * 32 * 32)

    def command(out, *extra):
        return main(["posterior", str(tmp_path / "sim" / "stack.tif"), "-o", str(out),
                     "--samples", "3", "--steps", "2", "--keep-samples", "2", "--seed", "5",
                     "--weights", str(untrained_weights), "--denoiser-weights", str(weights),
                     *extra])

    return command


def _stop_after(monkeypatch, frames: int) -> None:
    """The progress callback raises KeyboardInterrupt (Ctrl-C) once ``frames`` are done."""

    class Bar:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def progress(done, total):
        if done == frames:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_posterior, "progress_bar", lambda total, label: (Bar(), progress))


@pytest.mark.parametrize("stop_after", [3])  # inside the second block of two frames
def test_resumed_run_equals_an_uninterrupted_one(run, tmp_path, monkeypatch, capsys,
                                                 stop_after):
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert run(full) == 0
    assert sorted(p.name for p in full.iterdir()) == OUTPUTS  # the partial folder is gone
    with monkeypatch.context() as patch:
        _stop_after(patch, stop_after)
        assert run(stopped) == 130
    assert "--resume" in capsys.readouterr().err
    # nothing under the final names, only the hidden partial folder with its complete frames
    assert [p.name for p in stopped.iterdir()] == [PARTIAL_DIR]
    state = json.loads((stopped / PARTIAL_DIR / STATE_FILE).read_text())
    assert state["done"] == stop_after
    assert run(stopped, "--resume") == 0
    assert f"resumed after frame {stop_after} of 6" in capsys.readouterr().out
    assert sorted(p.name for p in stopped.iterdir()) == OUTPUTS
    for name in OUTPUTS:
        assert (full / name).read_bytes() == (stopped / name).read_bytes(), name
    ids = pd.read_csv(full / "localizations.csv")["id"]
    assert len(ids) > 0 and list(ids) == list(range(1, len(ids) + 1))
    assert sorted(set(read_localizations(full / "localizations.csv")["frame"])) == list(range(6))
    with open_stack(full / "mean.tif") as mean, open_stack(full / "samples.tif") as samples:
        assert mean.data.shape == (6, 128, 128) and samples.data.shape == (12, 128, 128)
        assert not np.array_equal(samples.data[0], samples.data[1])


def test_resume_refuses_a_partial_run_with_other_settings(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _stop_after(patch, 2)
        assert run(out) == 130
    capsys.readouterr()
    assert run(out, "--resume", "--frames", "1-4") == 2
    err = capsys.readouterr().err
    assert "cannot resume: the partial run" in err and "frame" in err
    assert [p.name for p in out.iterdir()] == [PARTIAL_DIR]  # left for a matching --resume
    assert run(out) == 0  # without --resume: starts again
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS


def test_resume_with_a_drift_curve_equals_an_uninterrupted_run(run, tmp_path, monkeypatch):
    from napari_smlm_diffusion.postprocess.drift_curve import write_drift_curve

    curve = np.column_stack([np.linspace(0, 100, 6), np.linspace(0, -50, 6)])
    drift = str(write_drift_curve(tmp_path / "curve.csv", curve))
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert run(full, "--drift", drift) == 0
    with monkeypatch.context() as patch:
        _stop_after(patch, 3)
        assert run(stopped, "--drift", drift) == 130
    assert run(stopped, "--resume", "--drift", drift) == 0
    for name in OUTPUTS:
        assert (full / name).read_bytes() == (stopped / name).read_bytes(), name
    assert run(tmp_path / "plain") == 0
    assert (full / "sum_mean.tif").read_bytes() != (tmp_path / "plain" / "sum_mean.tif"
                                                     ).read_bytes()


def test_memory_does_not_grow_with_the_number_of_frames(untrained_weights, tmp_path,
                                                        monkeypatch):
    """Peak Python/numpy memory (tracemalloc) of streaming and publishing 4 and 24 frames: each
    frame adds 256 KB of maps, which must not accumulate. (Localization, whose transient memory
    varies from frame to frame with the molecules, is replaced by the peaks of the mean.)"""
    import tracemalloc

    from card_helpers import uncalibrated_eps_card
    from napari_smlm_diffusion import posterior
    from napari_smlm_diffusion.camera import preset
    from napari_smlm_diffusion.kde import find_peaks
    from napari_smlm_diffusion.pipeline import KdeEngine
    from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings
    from napari_smlm_diffusion.posterior_outputs import publish_posterior, stream_posterior
    from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack

    class PixelDenoiser(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor(0.4))

        def forward(self, y_t, cond, x, log_snr):
            return self.weight * torch.tanh(y_t) + 0.2 * cond

    monkeypatch.setitem(posterior_sampling.BLOCK_SAMPLE_PIXELS, "cpu", 2 * 2 * 32 * 32)
    monkeypatch.setattr(posterior, "localize_posterior", lambda result, *args: find_peaks(
        result.mean, 40.0, 0.05, frame=result.frame))
    stack = simulate_stack(24, SimulationConfig(size=(32, 32), density=2.0), seed=1).frames
    kde = KdeEngine.load(str(untrained_weights), device="cpu", notify=lambda message: None)
    engine = PosteriorEngine(kde, PixelDenoiser(), uncalibrated_eps_card(0.05))
    settings = PosteriorSettings(samples=2, steps=2, keep_samples=2)
    peaks = {}
    for count in (4, 4, 24):  # the first run warms caches up
        out = tmp_path / f"out{count}"
        out.mkdir(exist_ok=True)
        tracemalloc.start()
        stream_posterior(stack, preset("sCMOS"), engine, range(count), settings, out, {}, 150.0)
        publish_posterior(out, {}, {}, 40.0)
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        with open_stack(out / "mean.tif") as mean:
            assert mean.data.shape == (count, 128, 128)
    assert peaks[24] - peaks[4] < 500_000, peaks
