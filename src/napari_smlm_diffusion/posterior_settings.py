"""How to sample the diffusion posterior (no torch import, so the command's help stays fast)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

SAMPLER_NAMES = ("dpm-solver", "ddim", "ddpm")  # the keys of diffusion.SAMPLERS


@dataclass
class PosteriorSettings:
    """How to sample the posterior."""

    samples: int = 8
    steps: int = 10  # DPM-Solver steps: as good as 100 DDPM steps (benchmark)
    sampler: str = "dpm-solver"
    seed: int = 0
    keep_samples: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InputError(f"samples must be >= 1, got {self.samples}")
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if self.sampler not in SAMPLER_NAMES:
            raise InputError(f"unknown sampler {self.sampler!r}; expected one of "
                             f"{list(SAMPLER_NAMES)}")
        if not 0 <= self.keep_samples <= self.samples:
            raise InputError(f"keep_samples must be between 0 and samples ({self.samples}), "
                             f"got {self.keep_samples}")


DEFAULT_POSTERIOR = PosteriorSettings()
