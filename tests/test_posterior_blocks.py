"""Blocks of frames x samples per network call: the same posterior as frame by frame, peaks and
moments computed on the device, one host transfer per block."""

import numpy as np
import pytest
import torch

from card_helpers import uncalibrated_eps_card
from napari_smlm_diffusion import pipeline, posterior_sampling
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.diffusion import RunningMoments
from napari_smlm_diffusion.kde import find_peaks
from napari_smlm_diffusion.models.denoiser import ConditionalDenoiser
from napari_smlm_diffusion.pipeline import KdeEngine
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings, iter_posterior
from napari_smlm_diffusion.posterior_sampling import summarise_block
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack


class PixelDenoiser(torch.nn.Module):
    """Pixel-wise stand-in network: a sample's output does not depend on its batch, bit for
    bit; counts its calls and the items per call."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(0.4))
        self.batches: list[int] = []

    def forward(self, y_t, cond, x, log_snr):
        self.batches.append(len(y_t))
        return self.weight * torch.tanh(y_t) + 0.2 * cond - 0.05


def small_denoiser() -> ConditionalDenoiser:
    """A small real denoiser with non-zero weights (its head is zero-initialised)."""
    torch.manual_seed(3)
    model = ConditionalDenoiser((8, 8, 12), 16).eval()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    return model


@pytest.fixture
def stack():
    return simulate_stack(5, SimulationConfig(size=(16, 20), density=3.0), seed=2).frames


def _engine(weights, denoiser):
    kde = KdeEngine.load(str(weights), device="cpu", notify=lambda message: None)
    return PosteriorEngine(kde, denoiser, uncalibrated_eps_card(detection_threshold=0.05))


def test_device_summary_equals_host_peaks_and_moments():
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(2, 3, 40, 36, generator=g) ** 3
    samples[0, 1, 0, 0] = samples[0, 1, 39, 35] = 2.0  # peaks on the border
    samples[1, 2, 10:12, 10:12] = 1.5  # a plateau: one peak
    summary = summarise_block(samples, keep=2, threshold=0.3)
    host = samples.numpy()
    for j in range(2):
        moments = RunningMoments()
        for sample in host[j]:
            moments.add(sample)
        assert np.allclose(summary.mean[j], moments.mean, rtol=1e-6, atol=1e-7)
        assert np.allclose(summary.variance[j], moments.variance, rtol=1e-5, atol=1e-7)
        assert np.array_equal(summary.kept[j], host[j, :2])
        tables = summary.sample_peaks(j, 10 + j, 3, 12.5)
        for k in range(3):
            expected = find_peaks(host[j, k], 12.5, 0.3, frame=10 + j)
            assert len(expected) > 0 and tables[k].equals(expected)


def test_blocks_equal_frame_by_frame_bit_for_bit_with_a_pixelwise_network(untrained_weights,
                                                                          stack, monkeypatch):
    """With the KDE CNN run frame by frame (its convolutions round differently for other batch
    sizes) and a pixel-wise denoiser, blocks change nothing, bit for bit."""
    monkeypatch.setattr(pipeline, "CPU_FORWARD_BATCH", 1)
    settings = PosteriorSettings(samples=3, steps=3, sampler="ddpm", seed=4, keep_samples=2)
    network = PixelDenoiser()
    engine = _engine(untrained_weights, network)
    blocks = list(iter_posterior(stack, preset("sCMOS"), engine, range(5), settings, 150.0))
    assert network.batches == [15] * 3  # all five frames' samples in one call per step
    single = list(iter_posterior(stack, preset("sCMOS"), _engine(untrained_weights,
                                                                  PixelDenoiser()),
                                 range(5), settings, 150.0, block_frames=1))
    for block, alone in zip(blocks, single, strict=True):
        a, b = block.frames[0], alone.frames[0]
        assert a.frame == b.frame
        for name in ("mean", "variance", "kept", "y_hat"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert all(p.equals(q) for p, q in zip(a.sample_peaks, b.sample_peaks, strict=True))
        assert block.localizations.equals(alone.localizations)
    assert sum(len(p) for b in blocks for p in b.frames[0].sample_peaks) > 0


def test_blocks_equal_frame_by_frame_with_a_convolutional_network(untrained_weights, stack):
    """Convolutions round differently for other batch sizes (~1e-6): equal to float
    tolerance."""
    settings = PosteriorSettings(samples=2, steps=2, seed=1, keep_samples=2)
    engine = _engine(untrained_weights, small_denoiser())
    frames = np.asarray(stack[:3])
    block = engine.sample_frames(frames, [0, 1, 2], preset("sCMOS"), settings, 0.05)
    for j in range(3):
        alone = engine.sample_frame(frames[j], j, preset("sCMOS"), settings, 0.05)
        scale = np.abs(alone.kept).max()
        assert scale > 0.1
        assert np.allclose(block[j].kept, alone.kept, atol=1e-5 * scale, rtol=0)
        assert np.allclose(block[j].mean, alone.mean, atol=1e-5 * scale, rtol=0)
    assert not np.allclose(block[0].kept[0], block[0].kept[1])


def test_one_host_transfer_per_block(untrained_weights, stack, monkeypatch):
    """Everything that moves data off a device or waits for it is counted while a block of
    three frames is sampled: the KDE CNN's output (one copy per call) and the sampler's one."""
    calls: dict[str, int] = {}

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)

    engine = _engine(untrained_weights, small_denoiser())
    predict = engine.kde.predict
    kde_calls = []
    monkeypatch.setattr(engine.kde, "predict",
                        lambda *args: kde_calls.append(1) or predict(*args))
    to_host = posterior_sampling.to_host
    transfers = []
    monkeypatch.setattr(posterior_sampling, "to_host",
                        lambda tensor: transfers.append(tensor.numel()) or to_host(tensor))
    for name in ("cpu", "numpy", "item", "tolist", "__bool__", "__int__", "__float__"):
        counting(name)
    settings = PosteriorSettings(samples=4, steps=3, seed=0, keep_samples=1)
    results = engine.sample_frames(np.asarray(stack[:3]), [0, 1, 2], preset("sCMOS"), settings,
                                   0.05)
    assert len(results) == 3 and len(transfers) == 1 and len(kde_calls) == 1
    assert calls == {"cpu": 2, "numpy": 2}  # one for the KDE CNN, one for the sampler
