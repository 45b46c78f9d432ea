"""Camera and PSF values stored in a layer's metadata (by the reader, the sample data, or files
written by this plugin)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ...camera import CAMERA_FIELDS


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def values_from_metadata(metadata: Mapping[str, Any] | None) -> dict[str, float]:
    """Camera fields (``baseline`` ... ``pixel_size``) and ``psf_sigma_nm`` found in metadata.

    Parameters
    ----------
    metadata : mapping or None
        A layer's metadata: camera keys at the top level and/or nested under ``"camera"``,
        ``pixel_size_nm`` and ``psf_sigma_nm``. Top-level keys win over nested ones.

    Returns
    -------
    dict
        Only the values that are present and numeric (not validated further).
    """
    metadata = metadata or {}
    nested = metadata.get("camera")
    nested = nested if isinstance(nested, Mapping) else {}
    values: dict[str, float] = {}
    for key in CAMERA_FIELDS:
        for source in (metadata, nested):
            number = _number(source.get(key))
            if number is not None:
                values[key] = number
                break
    pixel = _number(metadata.get("pixel_size_nm"))
    if pixel is not None:
        values["pixel_size"] = pixel
    sigma = _number(metadata.get("psf_sigma_nm"))
    if sigma is None:
        sigma = _number(nested.get("psf_sigma_nm"))
    if sigma is not None:
        values["psf_sigma_nm"] = sigma
    return values
