"""Out-of-memory retries of the posterior draw the same seeded samples as an uninterrupted run,
also when the device runs out of memory inside the network, after noise was drawn."""

import numpy as np
import pytest
import torch

from card_helpers import uncalibrated_eps_card
from napari_smlm_diffusion import posterior_engine
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.devices import is_out_of_memory
from napari_smlm_diffusion.pipeline import KdeEngine
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack


class ElementwiseDenoiser(torch.nn.Module):
    """A pixel-wise stand-in network (so its output for a sample does not depend on the other
    samples of the batch, bit for bit) that runs out of (pretended GPU) memory on its
    ``fail_on``-th call whenever it is given more than ``fits`` samples."""

    def __init__(self, fail_on: int | None = None, fits: int = 1):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(0.4))
        self.fail_on, self.fits, self.calls = fail_on, fits, 0

    def forward(self, y_t, cond, x, log_snr):
        self.calls += 1
        if self.fail_on is not None and self.calls >= self.fail_on and len(y_t) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return self.weight * torch.tanh(y_t) + 0.1 * cond


@pytest.mark.parametrize("sampler", ["ddpm", "dpm-solver"])
def test_samples_retried_after_running_out_of_memory_in_the_network_equal_the_seeded_ones(
        untrained_weights, monkeypatch, sampler):
    """The mock raises at its third call (every sample's initial noise, and with DDPM two
    steps' noise, already drawn): the retry in smaller batches must redraw the same noise."""
    frame = simulate_stack(1, SimulationConfig(size=(12, 16)), seed=0).frames[0]
    settings = PosteriorSettings(samples=4, steps=4, sampler=sampler, seed=7, keep_samples=4)

    def run(denoiser: ElementwiseDenoiser, notes: list[str]):
        kde = KdeEngine.load(str(untrained_weights), device="cpu", notify=notes.append)
        engine = PosteriorEngine(kde, denoiser, uncalibrated_eps_card())
        return engine, engine.sample_frame(frame, 3, preset("sCMOS"), settings, threshold=0.3)

    _, reference = run(ElementwiseDenoiser(), [])
    # the CPU plays a GPU that runs out of memory for more than one sample at a time
    monkeypatch.setattr(posterior_engine, "can_step_down",
                        lambda error, device: is_out_of_memory(error))
    notes: list[str] = []
    failing = ElementwiseDenoiser(fail_on=3, fits=1)
    engine, retried = run(failing, notes)
    assert notes == ["out of cpu memory in the diffusion model: retrying with 2 samples at a "
                     "time", "out of cpu memory in the diffusion model: retrying with 1 sample at "
                     "a time"]
    assert engine.sample_batch == 1
    assert np.array_equal(retried.kept, reference.kept)
    assert np.array_equal(retried.mean, reference.mean)
    assert np.array_equal(retried.variance, reference.variance)
    assert not np.array_equal(reference.kept[0], reference.kept[1])  # samples differ
