"""Typed model cards: what a weights file is, how it was trained and for which conditions.

A card is the JSON file next to a ``.safetensors`` file. It is parsed into :class:`KdeCnnCard` or
:class:`DenoiserCard` when the weights load, so a missing or malformed field fails there, with the
file's name, instead of falling back to a module constant later. The denoiser records the hash of
the KDE CNN it was trained on; :func:`check_pairing` refuses any other CNN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREDICTIONS = ("eps", "v")
SCHEDULES = ("cosine",)


class WeightsError(RuntimeError):
    """A weights file or its model card is missing, altered or unusable."""


class CardError(WeightsError):
    """A model card lacks a field or holds an invalid value."""


def _field(card: dict, key: str, source: str | Path, kind: type | tuple[type, ...]) -> Any:
    if key not in card:
        raise CardError(f"model card {source}: missing field {key!r}")
    value = card[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CardError(f"model card {source}: field {key!r} must be {names}, "
                        f"got {type(value).__name__}")
    return value


def _number(card: dict, key: str, source: str | Path, positive: bool = True) -> float:
    value = float(_field(card, key, source, (int, float)))
    if not math.isfinite(value) or (positive and value <= 0):
        raise CardError(f"model card {source}: field {key!r} must be a finite number"
                        f"{' > 0' if positive else ''}, got {value}")
    return value


Bounds = tuple[float, float]


@dataclass(frozen=True)
class TrainingRanges:
    """Conditions a model was trained on (``None``: not recorded by that card).

    Attributes are (low, high) bounds: pixel size in nm, PSF sigma in camera pixels, photons per
    molecule per frame, background photons per pixel, density per um^2, EM gain.
    """

    pixel_size_nm: Bounds
    psf_sigma_px: Bounds
    photons: Bounds
    background: Bounds
    density: Bounds | None = None
    em_gain: Bounds | None = None
    blinking: bool = False

    @classmethod
    def from_training(cls, training: dict, source: str | Path) -> TrainingRanges:
        """Read the ranges from a card's ``training`` section (a denoiser's ``training.kde``)."""
        def bounds(key: str, required: bool = True) -> Bounds | None:
            if key not in training and not required:
                return None
            value = _field(training, key, source, (list, tuple))
            if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value) or \
                    not 0 <= value[0] <= value[1]:
                raise CardError(f"model card {source}: training range {key!r} must be "
                                f"[low, high] with 0 <= low <= high, got {value}")
            return float(value[0]), float(value[1])

        return cls(pixel_size_nm=bounds("pixel_size_nm"), psf_sigma_px=bounds("psf_sigma_px"),
                   photons=bounds("photons"), background=bounds("background"),
                   density=bounds("density", required=False),
                   em_gain=bounds("em_gain", required=False),
                   blinking=float(training.get("blinking_fraction", 0.0)) > 0)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) of the recorded ranges."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()
                if v is not None}


@dataclass(frozen=True)
class KdeCnnCard:
    """Model card of a KDE CNN."""

    source: str
    name: str
    sha256: str
    architecture: dict
    detection_threshold: float
    upsampling: int
    kde_sigma_fine_px: float
    training_ranges: TrainingRanges
    thresholds_by_psf: dict | None = None
    status: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    def threshold_for(self, psf_sigma_px: float | None) -> float:
        """Detection threshold for a PSF of ``psf_sigma_px`` camera pixels: from the card's
        ``thresholds_by_psf`` table when it has one, else its single ``detection_threshold``."""
        if self.thresholds_by_psf is None or psf_sigma_px is None:
            return self.detection_threshold
        from .calibration.detection_thresholds import threshold_for_psf

        return threshold_for_psf(self.thresholds_by_psf, psf_sigma_px)


@dataclass(frozen=True)
class Schedule:
    """The noise schedule the denoiser was trained with."""

    type: str
    steps: int
    offset: float


@dataclass(frozen=True)
class DenoiserCard:
    """Model card of a conditional diffusion denoiser."""

    source: str
    name: str
    sha256: str
    architecture: dict
    prediction: str
    schedule: Schedule
    residual_scale: float
    kde_cnn_sha256: str
    detection_threshold: float
    posterior_mean_threshold: float
    training_ranges: TrainingRanges
    uncertainty_model: dict | None = None
    pixel_variance_calibration: dict | None = None
    status: str = ""
    raw: dict = field(default_factory=dict, repr=False)


def _common(card: dict, source: str | Path) -> dict[str, Any]:
    return {"source": str(source), "name": str(card.get("name", Path(source).stem)),
            "sha256": _field(card, "sha256", source, str),
            "architecture": _field(card, "architecture", source, dict),
            "status": str(card.get("status", "")), "raw": card}


def parse_kde_cnn_card(card: dict, source: str | Path) -> KdeCnnCard:
    """Validate a KDE CNN card; :class:`CardError` names the file and the field."""
    threshold = _number(card, "detection_threshold", source)
    upsampling = int(_number(card, "upsampling", source))
    training = _field(card, "training", source, dict)
    table = card.get("thresholds_by_psf")
    if table is not None:
        from .calibration.detection_thresholds import check_threshold_table

        try:
            check_threshold_table(table)
        except ValueError as error:
            raise CardError(f"model card {source}: field 'thresholds_by_psf' {error}") from None
    return KdeCnnCard(**_common(card, source), detection_threshold=threshold,
                      upsampling=upsampling,
                      kde_sigma_fine_px=_number(card, "kde_sigma_fine_px", source),
                      training_ranges=TrainingRanges.from_training(training, source),
                      thresholds_by_psf=table)


def parse_denoiser_card(card: dict, source: str | Path) -> DenoiserCard:
    """Validate a denoiser card; :class:`CardError` names the file and the field."""
    prediction = _field(card, "prediction", source, str)
    if prediction not in PREDICTIONS:
        raise CardError(f"model card {source}: prediction must be one of {PREDICTIONS}, "
                        f"got {prediction!r}")
    stored = _field(card, "schedule", source, dict)
    schedule = Schedule(type=_field(stored, "type", f"{source} (schedule)", str),
                        steps=int(_number(stored, "T", f"{source} (schedule)")),
                        offset=_number(stored, "offset", f"{source} (schedule)"))
    if schedule.type not in SCHEDULES:
        raise CardError(f"model card {source}: schedule type must be one of {SCHEDULES}, "
                        f"got {schedule.type!r}")
    training = _field(card, "training", source, dict)
    detection = _number(card, "detection_threshold", source)
    return DenoiserCard(
        **_common(card, source), prediction=prediction, schedule=schedule,
        residual_scale=_number(card, "residual_scale", source),
        kde_cnn_sha256=_field(card, "kde_cnn_sha256", source, str),
        detection_threshold=detection,
        posterior_mean_threshold=float(card.get("posterior_mean_threshold", detection)),
        training_ranges=TrainingRanges.from_training(
            _field(training, "kde", f"{source} (training)", dict), source),
        uncertainty_model=card.get("uncertainty_model"),
        pixel_variance_calibration=card.get("pixel_variance_calibration"))


def check_pairing(denoiser: DenoiserCard, kde_cnn: KdeCnnCard) -> None:
    """Refuse a denoiser with a KDE CNN other than the one it was trained on."""
    if denoiser.kde_cnn_sha256 != kde_cnn.sha256:
        raise CardError(
            f"the denoiser {denoiser.source} was trained on the KDE CNN with sha256 "
            f"{denoiser.kde_cnn_sha256[:12]}..., not on {kde_cnn.source} "
            f"(sha256 {kde_cnn.sha256[:12]}...): use the denoiser trained with that CNN "
            "(smlm-diffusion train-diffusion --kde-weights ...) or the CNN it was trained with")
