"""After a run, put the result in view: the first processed frame, the main layers on top.

napari keeps the frame the user was looking at and adds new layers on top in the order they are
added; after a run on frames 1-5 of a 100-frame stack the viewer would still show frame 49,
where the per-frame results are empty. :func:`show_results` moves the frame slider to the first
processed frame, stacks the result layers in a fixed order (main results on top) and makes the
main ones visible and selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .outputs import find_output


def show_frame(viewer: Any, raw: Any, frame: int) -> None:
    """Move the frame slider to ``frame`` (0-based) of the 3D layer ``raw``."""
    if raw.ndim != 3:
        return
    world = float(raw.translate[-3]) + frame * float(raw.scale[-3])
    viewer.dims.set_point(viewer.dims.ndim - 3, world)


def stack_on_top(viewer: Any, names: Sequence[str]) -> list[Any]:
    """Move our result layers ``names`` (those present) to the top, the first one topmost."""
    layers = [layer for layer in (find_output(viewer, name) for name in names) if layer]
    for layer in reversed(layers):
        viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
    return layers


def show_results(viewer: Any, raw: Any, first_frame: int, stacking: Sequence[str],
                 main: Sequence[str]) -> None:
    """Show a run's results: the frame ``first_frame`` of ``raw``, the layers ``stacking`` on top
    in that order (topmost first), the ``main`` ones visible, the first of them selected."""
    show_frame(viewer, raw, first_frame)
    stack_on_top(viewer, stacking)
    shown = [layer for layer in (find_output(viewer, name) for name in main) if layer]
    for layer in shown:
        layer.visible = True
    if shown:
        viewer.layers.selection.active = shown[0]
