"""Matplotlib figures of the drift curve and the FRC curve (no pyplot: usable in threads and
embeddable in Qt), and PNG files written atomically."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ..io import PathLike, atomic_write
from .drift import DriftResult
from .frc import FrcResult


def draw_drift(figure: Figure, result: DriftResult) -> Figure:
    """Draw the per-frame drift (x, y) and the per-window estimates on ``figure``."""
    figure.clear()
    axes = figure.add_subplot()
    frames = range(1, len(result.drift_nm) + 1)
    for axis, (name, colour) in enumerate((("x", "tab:blue"), ("y", "tab:orange"))):
        axes.plot(frames, result.drift_nm[:, axis], color=colour, label=f"drift {name}")
        axes.plot(result.window_frames + 1, result.window_drift_nm[:, axis], "o", color=colour,
                  markersize=3)
    axes.set_xlabel("frame")
    axes.set_ylabel("drift (nm)")
    axes.set_title(f"RCC drift ({len(result.window_frames)} windows, "
                   f"{result.pairs_rejected} pairs rejected)")
    axes.legend()
    return figure


def draw_frc(figure: Figure, result: FrcResult) -> Figure:
    """Draw the FRC curve, the threshold and the resolution on ``figure``."""
    figure.clear()
    axes = figure.add_subplot()
    axes.plot(result.frequency * 1000, result.frc, label="FRC")
    axes.axhline(result.threshold, color="grey", linestyle="--",
                 label=f"threshold {result.threshold:.3f}")
    if result.resolution_nm == result.resolution_nm:  # not NaN
        axes.axvline(1000 / result.resolution_nm, color="tab:red",
                     label=f"resolution {result.resolution_nm:.1f} nm")
    axes.set_xlabel("spatial frequency (1/um)")
    axes.set_ylabel("FRC")
    axes.set_ylim(-0.1, 1.05)
    axes.legend()
    return figure


def save_png(figure: Figure, path: PathLike) -> Path:
    """Write ``figure`` as PNG atomically."""
    with atomic_write(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    return Path(path)
