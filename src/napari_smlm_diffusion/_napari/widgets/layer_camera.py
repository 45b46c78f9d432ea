"""The camera of each image layer, kept in the layer's metadata.

Every input layer has its own camera and PSF (:data:`CAMERA_KEY` in ``layer.metadata``: the
values and where they came from). The first time a layer is looked at its camera is resolved:
the camera found in the file's metadata (put there by the reader or the sample data) over the
saved defaults (:mod:`.settings`), or the defaults alone. After that only the user changes it
(typing, a preset, "From file metadata", the baseline estimate), so choosing a layer or
opening a widget never overwrites typed values. :data:`CAMERA_CHANGED` tells every widget
which layer's camera changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psygnal import Signal, SignalInstance

from ...camera import CAMERA_FIELDS, Camera, CameraError, camera_values_from_metadata
from ...errors import one_line
from .settings import CameraSettings, check_values, describe

#: Key in ``layer.metadata`` holding ``{"values": {...}, "source": "..."}``.
CAMERA_KEY = "smlm_camera"
FROM_FILE = "from file metadata"


class _Changes:
    """Holder of the process-wide signal (psygnal signals live on classes)."""

    changed = Signal(object)


_CHANGES = _Changes()
#: Emitted with the layer whose camera changed.
CAMERA_CHANGED: SignalInstance = _CHANGES.changed


def _from_file(layer: Any, defaults: CameraSettings) -> tuple[dict[str, float], str]:
    """The camera of the file's metadata over the defaults, or the defaults (and why)."""
    found = camera_values_from_metadata(layer.metadata)
    if not found:
        return defaults.values(), f"defaults ({defaults.source})"
    try:
        return check_values({**defaults.values(), **found}), FROM_FILE
    except CameraError as exc:
        return defaults.values(), f"defaults (file metadata refused: {one_line(exc)})"


def layer_camera(layer: Any, defaults: CameraSettings) -> tuple[dict[str, float], str]:
    """Camera + PSF values of ``layer`` and their source, resolved (and stored) on first use."""
    stored = layer.metadata.get(CAMERA_KEY)
    if isinstance(stored, Mapping):
        try:
            return check_values(stored["values"]), str(stored.get("source", ""))
        except (CameraError, KeyError, TypeError):
            pass  # damaged (e.g. edited by hand): resolved again below
    values, source = _from_file(layer, defaults)
    layer.metadata[CAMERA_KEY] = {"values": values, "source": source}
    return values, source


def set_layer_camera(layer: Any, changes: Mapping[str, Any], source: str,
                     defaults: CameraSettings) -> dict[str, float]:
    """Validate ``changes`` over the layer's camera, store them and tell the widgets.

    Raises
    ------
    CameraError
        One line naming the invalid value; the layer's camera is unchanged then.
    """
    current, _ = layer_camera(layer, defaults)
    values = check_values({**current, **changes})
    layer.metadata[CAMERA_KEY] = {"values": values, "source": source}
    CAMERA_CHANGED.emit(layer)
    return values


def reset_from_file(layer: Any, defaults: CameraSettings) -> tuple[dict[str, float], str]:
    """Forget the layer's camera and resolve it from its file metadata again."""
    layer.metadata.pop(CAMERA_KEY, None)
    values, source = layer_camera(layer, defaults)
    CAMERA_CHANGED.emit(layer)
    return values, source


def camera_of(values: Mapping[str, float]) -> Camera:
    """The :class:`Camera` of camera + PSF values."""
    return Camera(**{k: values[k] for k in CAMERA_FIELDS})


def camera_summary(layer: Any, defaults: CameraSettings) -> str:
    """One line: the layer's camera and PSF and their source (the defaults without a layer)."""
    if layer is None:
        return f"{describe(defaults.values())} [{defaults.source}]"
    values, source = layer_camera(layer, defaults)
    return f"{describe(values)} [{source}]"
