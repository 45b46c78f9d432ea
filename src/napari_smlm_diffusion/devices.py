"""Compute devices: which exist, which one a name means, and the out-of-memory ladder.

When a GPU runs out of memory, the engines retry with half the batch, down to one item, then
continue on the CPU (:func:`step_down`); every rung is said through ``notify``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: Out-of-memory errors of any torch device (torch >= 2.5 has the device-generic class).
DEVICE_OOM: tuple[type[BaseException], ...] = (
    getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError)
#: How the MPS backend words its out-of-memory RuntimeError.
MPS_OOM_TEXT = "MPS backend out of memory"

Notify = Callable[[str], None]


class Cancelled(Exception):
    """The job was cancelled through ``should_stop``."""


class DeviceError(RuntimeError):
    """The requested compute device does not exist on this machine."""


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    """Devices that exist here, "auto" first (for GUI choices and CLI help)."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.insert(1, "cuda")
    if _mps_available():
        devices.insert(1, "mps")
    return devices


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; an explicit device (``cuda:N`` included) must
    exist here, else :class:`DeviceError` says what does."""
    name = str(name).lower().strip()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    base, colon, index = name.partition(":")
    if base not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {name!r}; expected one of {available_devices()}")
    if base != "cpu" and base not in available_devices():
        raise DeviceError(
            f"device {name!r} was requested but is not available on this machine; "
            f"available: {', '.join(available_devices())}"
        )
    if colon:
        count = torch.cuda.device_count() if base == "cuda" else 1
        if not index.isdigit() or int(index) >= count:
            have = ", ".join(f"{base}:{i}" for i in range(count))
            raise DeviceError(f"device {name!r} does not exist on this machine; expected "
                              f"{base} or one of {have}")
    return torch.device(name)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that a device ran out of memory (torch's out-of-memory errors, or
    the RuntimeError of the MPS backend)."""
    return isinstance(error, DEVICE_OOM) or (isinstance(error, RuntimeError)
                                             and MPS_OOM_TEXT in str(error))


def can_step_down(error: BaseException, device: torch.device) -> bool:
    """Whether :func:`step_down` can answer ``error``: a GPU (not the CPU) ran out of memory."""
    return device.type != "cpu" and is_out_of_memory(error)


def step_down(batch: int, device: torch.device, notify: Notify,
              retrying: Callable[[int], str], fall_back: Callable[[], None]) -> int:
    """One rung down the out-of-memory ladder on ``device``: halve ``batch`` and say
    ``retrying(new batch)``, or at batch 1 call ``fall_back()`` (which moves the work to the CPU
    and says so). Cached GPU memory is released. Returns the batch to retry with."""
    if batch > 1:
        batch = max(1, batch // 2)
        notify(retrying(batch))
    else:
        fall_back()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return batch
