"""Determinism: a seeded posterior on the CPU is reproducible bit for bit.

Noise comes from CPU generators seeded by (seed, frame, sample) (posterior.sample_generators), so
the posterior of a frame depends on the seed and the frame, not on the frame range, the batch or
the global random state. These tests use the shipped weights but do not depend on their values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.diffusion import SAMPLERS
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings, run_posterior
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack


@pytest.fixture(scope="module")
def engine():
    return PosteriorEngine.load(device="cpu", notify=lambda message: None)


@pytest.fixture(scope="module")
def frames():
    return simulate_stack(2, SimulationConfig(size=(32, 32), density=2.0), seed=5).frames


def _posterior(engine, frames, frame_range, seed, sampler="dpm-solver"):
    settings = PosteriorSettings(samples=2, steps=3, sampler=sampler, seed=seed, keep_samples=2)
    return run_posterior(frames, preset("sCMOS"), engine, frame_range, settings)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_same_seed_same_bits_other_seed_other_result(engine, frames, sampler):
    first = _posterior(engine, frames, range(1), 0, sampler)
    torch.manual_seed(1234)  # the global random state must not matter
    np.random.seed(1234)  # noqa: NPY002 (the legacy global state is what must not matter)
    again = _posterior(engine, frames, range(1), 0, sampler)
    for name in ("means", "stds", "samples"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert first.localizations.equals(again.localizations)
    other = _posterior(engine, frames, range(1), 1, sampler)
    assert not np.array_equal(first.samples, other.samples)


def test_a_frame_posterior_does_not_depend_on_the_frame_range(engine, frames):
    """The same noise; frames sampled in one block (range(2)) or alone (range(1, 2)) go through
    network calls of other batch sizes, whose convolutions round differently (~1e-6)."""
    both = _posterior(engine, frames, range(2), 3)
    second = _posterior(engine, frames, range(1, 2), 3)
    assert np.allclose(both.samples[1], second.samples[0], atol=1e-5, rtol=1e-5)
    assert np.allclose(both.means[1], second.means[0], atol=1e-5, rtol=1e-5)
    assert not np.array_equal(both.samples[0], both.samples[1])  # frames get different noise
