"""The default camera and PSF, persisted between sessions when the user asks.

Each image layer has its own camera (:mod:`.layer_camera`); these defaults are what a layer
without camera metadata starts from. There is one :class:`CameraSettings` object per process
(:func:`get_settings`). It only ever holds a valid camera: :meth:`CameraSettings.apply`
validates new values through :class:`~napari_smlm_diffusion.camera.Camera` and raises
:class:`CameraError` otherwise. Every change is emitted through psygnal (``settings.events``);
the values are saved as JSON in the user config directory (``NAPARI_SMLM_DIFFUSION_CONFIG_DIR``
overrides it), written atomically, only by :meth:`CameraSettings.save` ("Save as default").
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psygnal import evented

from ...camera import CAMERA_FIELDS, PRESETS, Camera, CameraError
from ...geometry import default_psf_sigma_nm
from ...io import atomic_write

CONFIG_ENV = "NAPARI_SMLM_DIFFUSION_CONFIG_DIR"
SETTINGS_FILE = "camera.json"
CUSTOM = "Custom"
#: Fields a preset sets (the pixel size depends on the optics, not the camera model).
PRESET_FIELDS = ("baseline", "sensitivity", "em_gain", "quantum_efficiency", "read_noise")
VALUE_FIELDS = (*CAMERA_FIELDS, "psf_sigma_nm")

logger = logging.getLogger(__name__)


def config_path() -> Path:
    """File where the settings persist (``$NAPARI_SMLM_DIFFUSION_CONFIG_DIR/camera.json``)."""
    folder = os.environ.get(CONFIG_ENV)
    if not folder:
        from platformdirs import user_config_dir

        folder = user_config_dir("napari-smlm-diffusion", appauthor=False)
    return Path(folder) / SETTINGS_FILE


def preset_of(values: Mapping[str, float]) -> str:
    """Name of the preset whose camera fields equal ``values`` (pixel size aside), or "Custom"."""
    for name, camera in PRESETS.items():
        if all(math.isclose(float(values[k]), getattr(camera, k), rel_tol=1e-9)
               for k in PRESET_FIELDS):
            return name
    return CUSTOM


def check_values(values: Mapping[str, Any]) -> dict[str, float]:
    """Validate camera + PSF values; return them as floats or raise :class:`CameraError`."""
    camera = Camera(**{k: values[k] for k in CAMERA_FIELDS})
    sigma = values["psf_sigma_nm"]
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        raise CameraError(f"PSF sigma={sigma!r} is not a number; expected > 0 nm") from None
    if not math.isfinite(sigma) or sigma <= 0:
        raise CameraError(f"PSF sigma={sigma!r} is invalid; expected > 0 nm")
    return {**camera.to_dict(), "psf_sigma_nm": sigma}


def describe(values: Mapping[str, float]) -> str:
    """One line describing camera + PSF values (with the preset they match)."""
    gain = f", EM gain {values['em_gain']:g}" if values["em_gain"] > 1 else ""
    return (f"{preset_of(values)}: baseline {values['baseline']:g} ADU, "
            f"{values['sensitivity']:g} e-/ADU{gain}, QE {values['quantum_efficiency']:g}, "
            f"read noise {values['read_noise']:g} e-, pixel {values['pixel_size']:g} nm, "
            f"PSF sigma {values['psf_sigma_nm']:g} nm")


@evented
@dataclass
class CameraSettings:
    """Current camera and PSF, and where they came from.

    Attributes
    ----------
    baseline, sensitivity, em_gain, quantum_efficiency, read_noise, pixel_size : float
        Camera fields (see :class:`~napari_smlm_diffusion.camera.Camera`).
    psf_sigma_nm : float
        PSF standard deviation in nm.
    preset : str
        "sCMOS", "EMCCD" or "Custom" (derived from the values).
    source : str
        Where the values came from (shown to the user).
    """

    baseline: float = PRESETS["sCMOS"].baseline
    sensitivity: float = PRESETS["sCMOS"].sensitivity
    em_gain: float = PRESETS["sCMOS"].em_gain
    quantum_efficiency: float = PRESETS["sCMOS"].quantum_efficiency
    read_noise: float = PRESETS["sCMOS"].read_noise
    pixel_size: float = PRESETS["sCMOS"].pixel_size
    psf_sigma_nm: float = default_psf_sigma_nm(PRESETS["sCMOS"].pixel_size)
    preset: str = "sCMOS"
    source: str = "sCMOS preset"

    def values(self) -> dict[str, float]:
        """Camera fields and ``psf_sigma_nm``."""
        return {k: getattr(self, k) for k in VALUE_FIELDS}

    def camera(self) -> Camera:
        """The current camera."""
        return Camera(**{k: getattr(self, k) for k in CAMERA_FIELDS})

    def apply(self, changes: Mapping[str, Any], source: str, save: bool = False) -> None:
        """Validate ``changes`` merged into the current values, then set them (and save them
        when ``save``).

        Raises
        ------
        CameraError
            One line naming the invalid value; nothing is changed then.
        """
        merged = check_values({**self.values(), **changes})
        for key, value in merged.items():
            setattr(self, key, value)
        self.preset = preset_of(merged)
        self.source = source
        if save:
            self.save()

    def summary(self) -> str:
        """One line describing the camera and PSF."""
        return describe(self.values())

    def save(self, path: Path | None = None) -> None:
        """Write the values as JSON, atomically; a failure is logged, never raised."""
        path = path or config_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as temporary:
                temporary.write_text(json.dumps(self.values(), indent=2) + "\n")
        except OSError as exc:
            logger.warning("could not save camera settings to %s: %s", path, exc)

    def load(self, path: Path | None = None) -> None:
        """Read saved values; a missing, unreadable or invalid file leaves the defaults."""
        path = path or config_path()
        try:
            stored = json.loads(path.read_text())
            self.apply({k: stored[k] for k in VALUE_FIELDS if k in stored},
                       source=f"saved defaults ({path})")
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("ignoring camera settings in %s: %s", path, exc)


_SETTINGS: CameraSettings | None = None


def get_settings() -> CameraSettings:
    """The process-wide settings, loaded from disk on first use."""
    global _SETTINGS
    if _SETTINGS is None:
        _SETTINGS = CameraSettings()
        _SETTINGS.load()
    return _SETTINGS


def reset_settings() -> None:
    """Forget the process-wide settings (the next :func:`get_settings` reloads; for tests)."""
    global _SETTINGS
    _SETTINGS = None


__all__ = ["CUSTOM", "CameraError", "CameraSettings", "config_path", "describe", "get_settings",
           "preset_of", "reset_settings"]
