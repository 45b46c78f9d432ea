"""Simulated training and validation data for the networks: the conditions users have.

Every training frame draws its microscope from wide ranges (pixel size, PSF width in camera
pixels, photons, background, camera kind and gain, sCMOS pixel maps, density, layout, blinking
kinetics), reproducibly from ``(seed, step)``. The validation set is a fixed list of named
conditions: those of the first release's benchmark (to see regressions) and the corners of the
training ranges (dim emitters behind small pixels, bright emitters on high background, EMCCD at
high gain, small and large pixels), never used for training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .blinking import Blinking
from .camera import Camera
from .kde import DEFAULT_KDE_SIGMA_PX
from .models.kde_cnn import KdeCnn
from .preprocess import normalize_frames
from .simulate import LAYOUTS, SimulationConfig, simulate_frames

VALIDATION_SEED = 900_000
#: Detection thresholds on a KDE tried when a model is validated or calibrated.
THRESHOLDS = tuple(np.round(np.arange(0.1, 0.75, 0.05), 2))


@dataclass
class KdeTrainingConfig:
    """Configuration of a KDE CNN training run and of its data (recorded in the model card).

    The ranges are the conditions the model is trained for: the loaders expose them and the
    warnings compare a user's settings with them.
    """

    steps: int = 20000
    batch_size: int = 16
    frame_size: int = 48
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    seed: int = 0
    density: tuple[float, float] = (0.05, 8.0)
    photons: tuple[float, float] = (100.0, 50000.0)
    background: tuple[float, float] = (1.0, 500.0)
    psf_sigma_px: tuple[float, float] = (0.7, 2.5)
    pixel_size_nm: tuple[float, float] = (50.0, 200.0)
    em_gain: tuple[float, float] = (30.0, 1000.0)
    layouts: tuple[str, ...] = LAYOUTS
    cameras: tuple[str, ...] = ("sCMOS", "EMCCD")
    blinking_fraction: float = 0.75
    on_time_frames: tuple[float, float] = (1.0, 10.0)
    pixel_map_fraction: float = 0.5
    kde_min_snr: float = 3.0
    #: Kernel sigma (fine pixels) of the target KDEs: the width of the peaks the CNN learns to
    #: output (narrower peaks merge less where molecules crowd; docs/benchmarks.md).
    kde_sigma_px: float = DEFAULT_KDE_SIGMA_PX
    fixed_camera: dict | None = None  # Camera fields: train for this camera (adapt)
    #: Share of frames drawn from the generic ranges (the defaults) instead of these: adapt
    #: replays them so that fine-tuning does not forget what the generic model knew.
    replay_fraction: float = 0.0
    #: Validation score that keeps the best weights: "efficiency" or "jaccard" (see
    #: ``train.SELECTION_TOLERANCE_NM``).
    selection: str = "efficiency"
    #: Fine-tuning only: points of that score by which training must beat the starting weights.
    fine_tune_margin: float = 0.0
    checkpoint_every: int = 100
    validate_every: int = 500
    validation_frames: int = 8
    grad_clip: float | None = 1.0
    architecture: dict = field(default_factory=lambda: dict(KdeCnn().config))


def log_uniform(bounds: tuple[float, float], rng: np.random.Generator) -> float:
    """A number drawn log-uniformly between two positive bounds."""
    return float(np.exp(rng.uniform(*np.log(bounds))))


def random_camera(kind: str, pixel_size: float, em_gain: tuple[float, float],
                  rng: np.random.Generator) -> Camera:
    """A plausible camera of the given kind with randomised parameters."""
    if kind == "EMCCD":
        return Camera(
            baseline=rng.uniform(50, 500),
            sensitivity=rng.uniform(2.0, 15.0),
            em_gain=log_uniform(em_gain, rng),
            quantum_efficiency=rng.uniform(0.8, 0.97),
            read_noise=rng.uniform(20.0, 80.0),
            pixel_size=pixel_size,
        )
    return Camera(
        baseline=rng.uniform(50, 500),
        sensitivity=rng.uniform(0.2, 2.5),
        em_gain=1.0,
        quantum_efficiency=rng.uniform(0.6, 0.95),
        read_noise=rng.uniform(0.8, 3.0),
        pixel_size=pixel_size,
    )


def random_blinking(config: KdeTrainingConfig, rng: np.random.Generator) -> Blinking | None:
    """Kinetics of one training frame (None: emitters drawn afresh, always fully on)."""
    if rng.random() >= config.blinking_fraction:
        return None
    on_time = log_uniform(config.on_time_frames, rng)
    duty = rng.uniform(0.02, 0.2)  # a single frame sees only the on-fraction statistics
    return Blinking(on_time=on_time, off_time=on_time * (1 / duty - 1),
                    photon_spread=rng.uniform(0.0, 0.4))


def random_simulation(config: KdeTrainingConfig, rng: np.random.Generator) -> SimulationConfig:
    """Draw the conditions of one training frame from the configured ranges."""
    pixel_size = rng.uniform(*config.pixel_size_nm)
    kind = str(rng.choice(config.cameras))
    if config.fixed_camera is None:
        camera = random_camera(kind, pixel_size, config.em_gain, rng)
    else:
        camera = Camera(**{**config.fixed_camera, "pixel_size": pixel_size})
    maps = kind == "sCMOS" and rng.random() < config.pixel_map_fraction
    return SimulationConfig(
        size=(config.frame_size, config.frame_size),
        density=log_uniform(config.density, rng),
        photons=config.photons,
        background=log_uniform(config.background, rng),
        psf_sigma_px=config.psf_sigma_px,
        camera=camera,
        layout=str(rng.choice(config.layouts)),
        blinking=random_blinking(config, rng),
        offset_spread_adu=rng.uniform(0.0, 3.0) if maps else 0.0,
        read_noise_spread=rng.uniform(0.0, 0.5) if maps else 0.0,
        kde_min_snr=config.kde_min_snr,
        kde_sigma_px=config.kde_sigma_px,
    )


@functools.lru_cache(maxsize=4)
def generic_ranges(frame_size: int, kde_min_snr: float,
                   kde_sigma_px: float = DEFAULT_KDE_SIGMA_PX) -> KdeTrainingConfig:
    """The generic models' training ranges (the :class:`KdeTrainingConfig` defaults) for frames
    of ``frame_size``, with targets of kernel sigma ``kde_sigma_px``."""
    return KdeTrainingConfig(frame_size=frame_size, kde_min_snr=kde_min_snr,
                             kde_sigma_px=kde_sigma_px)


def training_batch(config: KdeTrainingConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated (network input, KDE target) batch for one step, reproducible from (seed, step);
    a ``replay_fraction`` of its frames comes from the generic ranges."""
    rng = np.random.default_rng([config.seed, step])
    replay = generic_ranges(config.frame_size, config.kde_min_snr, config.kde_sigma_px) \
        if config.replay_fraction > 0 else None
    inputs, targets = [], []
    for _ in range(config.batch_size):
        replayed = replay is not None and rng.random() < config.replay_fraction
        sim = random_simulation(replay if replayed else config, rng)
        frame = next(simulate_frames(1, sim, seed=int(rng.integers(2**63)), with_kde=True))
        inputs.append(normalize_frames(frame.adu, sim.camera))
        targets.append(torch.from_numpy(frame.kde)[None, None])
    return torch.cat(inputs), torch.cat(targets)


FIRST_RELEASE_CAMERAS = {
    "sCMOS": Camera(pixel_size=100.0),
    "EMCCD": Camera(baseline=100, sensitivity=4.5, em_gain=100, quantum_efficiency=0.95,
                    read_noise=50, pixel_size=100.0),
}
REALISTIC_BLINKING = Blinking(on_time=3.0, off_time=100.0, photon_spread=0.2)


@dataclass(frozen=True)
class Microscope:
    """A corner of the training ranges: camera, photons per molecule, background, PSF."""

    camera: Camera
    photons: tuple[float, float]
    background: float
    psf_sigma_px: float

    @property
    def kind(self) -> str:
        """'EMCCD' or 'sCMOS'."""
        return "EMCCD" if self.camera.is_emccd else "sCMOS"

    def config(self, size: int, density: float) -> SimulationConfig:
        """Filaments of blinking fluorophores (:data:`REALISTIC_BLINKING`) on this microscope."""
        return SimulationConfig(size=(size, size), density=density, photons=self.photons,
                                background=self.background, psf_sigma_px=self.psf_sigma_px,
                                camera=self.camera, layout="filaments",
                                blinking=REALISTIC_BLINKING)


#: Microscopes at the corners of the training ranges (validation, calibration, benchmarks).
MICROSCOPE_CORNERS = {
    "dim/65nm/psf1.9": Microscope(Camera(pixel_size=65.0), (300.0, 550.0), 15.0, 1.9),
    "bright/130nm/bg250": Microscope(Camera(pixel_size=130.0), (10000.0, 20000.0), 250.0, 1.0),
    "EMCCD-gain800/160nm": Microscope(
        Camera(baseline=100, sensitivity=12.0, em_gain=800, quantum_efficiency=0.95,
               read_noise=60, pixel_size=160.0), (1000.0, 4000.0), 60.0, 0.8),
    "small-pixels/50nm/psf2.5": Microscope(Camera(pixel_size=50.0), (1000.0, 4000.0), 20.0, 2.5),
    "large-pixels/200nm/psf0.7": Microscope(Camera(pixel_size=200.0), (1500.0, 5000.0), 80.0,
                                            0.7),
}


def validation_conditions(size: int = 48) -> dict[str, SimulationConfig]:
    """Named validation conditions: the first release's and the corners of the training ranges."""
    conditions = {}
    for density in (0.3, 1.0, 3.0, 6.0):
        for kind, camera in FIRST_RELEASE_CAMERAS.items():
            for layout in ("uniform", "filaments"):
                conditions[f"{kind}/{layout}/d{density}"] = SimulationConfig(
                    size=(size, size), density=density, photons=(500.0, 10000.0),
                    background=(10.0, 150.0), psf_sigma_px=(0.8, 1.6), camera=camera,
                    layout=layout)
    for name, corner in MICROSCOPE_CORNERS.items():
        conditions[f"{name}/d1"] = corner.config(size, 1.0)
    return conditions


@dataclass
class ValidationSet:
    """Fixed simulated frames (never used in training) for model selection."""

    frames: list[np.ndarray]
    truths: list[pd.DataFrame]
    configs: list[SimulationConfig]
    names: list[str]


def validation_set(n_frames: int, size: int = 48,
                   conditions: dict[str, SimulationConfig] | None = None) -> ValidationSet:
    """``n_frames`` frames of every validation condition (default
    :func:`validation_conditions`), seeds from ``VALIDATION_SEED``."""
    frames, truths, configs, names = [], [], [], []
    conditions = validation_conditions(size) if conditions is None else conditions
    for k, (name, sim) in enumerate(conditions.items()):
        stack = list(simulate_frames(n_frames, sim, seed=VALIDATION_SEED + k, with_kde=False))
        frames.append(np.stack([f.adu for f in stack]))
        truths.append(pd.concat([f.truth for f in stack], ignore_index=True))
        configs.append(sim)
        names.append(name)
    return ValidationSet(frames, truths, configs, names)
