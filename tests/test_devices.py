"""Devices and the out-of-memory ladder (devices.py), and the posterior's own CPU fallback."""

import numpy as np
import pytest
import torch

from card_helpers import uncalibrated_eps_card
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.devices import (
    DeviceError,
    can_step_down,
    is_out_of_memory,
    resolve_device,
    step_down,
)
from napari_smlm_diffusion.pipeline import KdeEngine
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack


def test_device_indices_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"'cpu:1' does not exist on this machine; expected "
                                          r"cpu or one of cpu:0"):
        resolve_device("cpu:1")
    with pytest.raises(DeviceError, match="does not exist"):
        resolve_device("cpu:x")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert resolve_device(f"cuda:{count - 1}") == torch.device(f"cuda:{count - 1}")
        with pytest.raises(DeviceError, match=f"'cuda:{count}' does not exist"):
            resolve_device(f"cuda:{count}")
    else:
        with pytest.raises(DeviceError, match="not available on this machine"):
            resolve_device("cuda:0")


def test_out_of_memory_errors_of_every_backend_are_recognised():
    mps = RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB, other allocations: "
                       "1.00 GB, max allowed: 9.07 GB). Tried to allocate 256 MB on private pool.")
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(mps)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("MPS backend out of memory"))
    assert can_step_down(mps, torch.device("mps"))
    assert not can_step_down(mps, torch.device("cpu"))  # nowhere left to go


def test_step_down_halves_then_falls_back():
    said, fell = [], []
    assert step_down(5, torch.device("mps"), said.append, lambda n: f"batch {n}",
                     lambda: fell.append(True)) == 2
    assert step_down(1, torch.device("mps"), said.append, lambda n: f"batch {n}",
                     lambda: fell.append(True)) == 1
    assert said == ["batch 2"] and fell == [True]


class ZeroDenoiser(torch.nn.Module):
    """Predicts zero whatever the input; its ``to`` stays on the CPU (a pretended GPU)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, y_t, cond, x, log_snr):
        return torch.zeros_like(y_t)

    def to(self, *args, **kwargs):
        return self


def test_posterior_fallback_moves_only_the_denoiser(untrained_weights, monkeypatch):
    """The denoiser runs out of (pretended) GPU memory even for one sample: it continues on the
    CPU, and the KDE engine, which other jobs may share, stays on its device."""
    frame = simulate_stack(1, SimulationConfig(size=(12, 16)), seed=0).frames[0]
    notes = []
    kde = KdeEngine.load(str(untrained_weights), device="cpu", notify=notes.append)
    engine = PosteriorEngine(kde, ZeroDenoiser(), uncalibrated_eps_card())
    kde.device = torch.device("cuda")  # pretend; the networks still compute on the CPU
    cpu_predict, cpu_residuals = KdeEngine.predict, PosteriorEngine._residuals
    monkeypatch.setattr(KdeEngine, "predict", lambda self, frames, camera: cpu_predict(
        KdeEngine(self.model, self.card, torch.device("cpu"), self.notify), frames, camera))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    def residuals(self, *args):
        if self.device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4 GiB")
        return cpu_residuals(self, *args)

    monkeypatch.setattr(PosteriorEngine, "_residuals", residuals)
    settings = PosteriorSettings(samples=2, steps=2, keep_samples=2)
    result = engine.sample_frame(frame, 0, preset("sCMOS"), settings, threshold=0.3)
    assert notes[-1] == ("out of cuda memory in the diffusion model even for one sample: "
                         "continuing on the CPU")
    assert engine.device.type == "cpu" and engine.denoiser_on_cpu
    assert kde.device.type == "cuda"  # the shared KDE engine was not moved
    assert engine.sample_batch is None
    assert result.kept.shape == (2, 48, 64) and np.isfinite(result.kept).all()
