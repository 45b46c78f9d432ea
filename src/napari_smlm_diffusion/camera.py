"""Camera model: ADU <-> photons, presets, and the Poisson-normal transform.

One source of truth for the camera convention of the whole package::

    photons = (ADU - baseline) * sensitivity / em_gain / quantum_efficiency

``photons`` are photons arriving at the pixel; ``quantum_efficiency * photons`` are the
photo-electrons that the sensor detects. ``read_noise`` is the rms read noise in electrons at the
read-out (before division by the EM gain). An EMCCD multiplies the signal by a stochastic gain whose
excess noise factor is sqrt(2): the variance of a Poisson signal of mean n becomes 2 n.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .errors import InputError

EMCCD_EXCESS_NOISE = math.sqrt(2.0)
CAMERA_FIELDS = ("baseline", "sensitivity", "em_gain", "quantum_efficiency", "read_noise",
                 "pixel_size")

#: Plausibility limits (far beyond real cameras): larger values are rejected as typos.
MAX_BASELINE_ADU = 1e6
MAX_SENSITIVITY = 1e3
MAX_EM_GAIN = 1e4
MAX_READ_NOISE = 1e4
MAX_PIXEL_SIZE_NM = 1e4


class CameraError(InputError):
    """A camera parameter is invalid."""


@dataclass(frozen=True)
class Camera:
    """Camera parameters of an SMLM recording.

    Parameters
    ----------
    baseline : float
        Offset in ADU added by the read-out (the value of a dark pixel).
    sensitivity : float
        Electrons per ADU (> 0).
    em_gain : float
        Electron-multiplying gain (1 for sCMOS / CCD without EM).
    quantum_efficiency : float
        Fraction of arriving photons detected, in (0, 1].
    read_noise : float
        Read noise in electrons rms (>= 0).
    pixel_size : float
        Camera pixel size in the sample plane, nm (> 0).
    """

    baseline: float = 100.0
    sensitivity: float = 0.46
    em_gain: float = 1.0
    quantum_efficiency: float = 1.0
    read_noise: float = 1.6
    pixel_size: float = 100.0

    def __post_init__(self) -> None:
        # Upper limits are far beyond any real camera; they catch typos and unit mix-ups
        # (e.g. a pixel size in um given as nm, or the EM gain register value instead of the gain).
        checks = {
            "baseline": (self.baseline, lambda v: abs(v) <= MAX_BASELINE_ADU,
                         f"a finite number of ADU between -{MAX_BASELINE_ADU:g} and "
                         f"{MAX_BASELINE_ADU:g}"),
            "sensitivity": (self.sensitivity, lambda v: 0 < v <= MAX_SENSITIVITY,
                            f"> 0 and <= {MAX_SENSITIVITY:g} electrons per ADU"),
            "em_gain": (self.em_gain, lambda v: 1 <= v <= MAX_EM_GAIN,
                        f">= 1 (use 1 for sCMOS) and <= {MAX_EM_GAIN:g}"),
            "quantum_efficiency": (
                self.quantum_efficiency,
                lambda v: 0 < v <= 1,
                "in (0, 1]",
            ),
            "read_noise": (self.read_noise, lambda v: 0 <= v <= MAX_READ_NOISE,
                           f">= 0 and <= {MAX_READ_NOISE:g} electrons rms"),
            "pixel_size": (self.pixel_size, lambda v: 0 < v <= MAX_PIXEL_SIZE_NM,
                           f"> 0 and <= {MAX_PIXEL_SIZE_NM:g} nm (the pixel size in the sample "
                           "plane, in nm)"),
        }
        for name, (value, ok, expected) in checks.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise CameraError(
                    f"camera {name}={value!r} is not a number; expected {expected}"
                ) from None
            if not math.isfinite(number) or not ok(number):
                raise CameraError(f"camera {name}={value!r} is invalid; expected {expected}")

    @property
    def is_emccd(self) -> bool:
        """True when the camera multiplies electrons (EM gain > 1)."""
        return self.em_gain > 1.0

    @property
    def excess_noise(self) -> float:
        """Excess noise factor: sqrt(2) for an EMCCD, 1 otherwise."""
        return EMCCD_EXCESS_NOISE if self.is_emccd else 1.0

    @property
    def adu_per_photon(self) -> float:
        """ADU produced on average by one arriving photon."""
        return self.quantum_efficiency * self.em_gain / self.sensitivity

    @property
    def read_noise_photons(self) -> float:
        """Read noise expressed in photon units (rms)."""
        return self.read_noise / (self.em_gain * self.quantum_efficiency)

    def adu_to_photons(self, adu: np.ndarray | float) -> np.ndarray:
        """Convert camera counts (ADU) to photons (float32 array)."""
        adu = np.asarray(adu, dtype=np.float32)
        return (adu - np.float32(self.baseline)) / np.float32(self.adu_per_photon)

    def photons_to_adu(self, photons: np.ndarray | float) -> np.ndarray:
        """Convert photons to expected camera counts (ADU, float)."""
        photons = np.asarray(photons, dtype=np.float32)
        return photons * np.float32(self.adu_per_photon) + np.float32(self.baseline)

    def poisson_normal(self, adu):
        """Poisson-normal transform of eq. 5-6 of the reference paper.

        Returns x' = x - o + s^2 in effective photo-electron counts, approximately
        Poisson(omega + s^2) distributed, where x is the signal in detected electrons, o the
        offset and s the read noise (both in the same units). For an EMCCD the counts are divided
        by the excess noise factor squared (2), so that the result again has variance ~ mean.
        Accepts numpy arrays (converted to float32) or float torch tensors.
        """
        if not hasattr(adu, "detach"):
            adu = np.asarray(adu, dtype=np.float32)
        electrons = (adu - self.baseline) * (self.sensitivity / self.em_gain)
        transformed = electrons + (self.read_noise / self.em_gain) ** 2
        return transformed / self.excess_noise**2

    def with_values(self, **changes: float) -> Camera:
        """Return a copy with some parameters changed (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, float]:
        """Parameters as a plain dict (for JSON, settings and metadata)."""
        return asdict(self)


PRESETS: dict[str, Camera] = {
    # A typical back-illuminated sCMOS (e.g. Hamamatsu ORCA-Flash class) at 100 nm pixels.
    "sCMOS": Camera(
        baseline=100.0,
        sensitivity=0.46,
        em_gain=1.0,
        quantum_efficiency=0.82,
        read_noise=1.6,
        pixel_size=100.0,
    ),
    # A typical EMCCD (e.g. Andor iXon class) at EM gain 100, 160 nm pixels.
    "EMCCD": Camera(
        baseline=100.0,
        sensitivity=4.5,
        em_gain=100.0,
        quantum_efficiency=0.95,
        read_noise=50.0,
        pixel_size=160.0,
    ),
}


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (booleans and text are not numbers here)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def camera_values_from_metadata(
    metadata: Mapping[str, Any] | None,
    on_ignored: Callable[[str, Any], None] | None = None,
) -> dict[str, float]:
    """Camera fields (``baseline`` ... ``pixel_size``) and ``psf_sigma_nm`` stored in metadata
    (of a file written by this plugin, a layer, the sample data).

    Keys may sit at the top level or nested under ``"camera"``; the top level wins, and a
    top-level ``pixel_size_nm`` gives ``pixel_size``. Metadata are data, never trusted: only
    finite numbers are taken (not validated further); a value present but not a number is
    skipped and passed to ``on_ignored(key, value)``.
    """
    metadata = metadata or {}
    nested = metadata.get("camera")
    nested = nested if isinstance(nested, Mapping) else {}
    values: dict[str, float] = {}
    for key in (*CAMERA_FIELDS, "psf_sigma_nm"):
        for source in (metadata, nested):
            raw = source.get(key)
            number = _number(raw)
            if number is not None:
                values[key] = number
                break
            if raw is not None and on_ignored is not None:
                on_ignored(key, raw)
    pixel = _number(metadata.get("pixel_size_nm"))
    if pixel is not None:
        values["pixel_size"] = pixel
    return values


def preset(name: str, **overrides: float) -> Camera:
    """Return a named camera preset ("sCMOS" or "EMCCD"), optionally with changed values."""
    key = {k.lower(): k for k in PRESETS}.get(str(name).lower())
    if key is None:
        raise CameraError(f"unknown camera preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[key].with_values(**overrides) if overrides else PRESETS[key]
