"""A combo box of the viewer's input image layers (our own result layers are left out)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox
from napari.layers import Image

#: Key in ``layer.metadata`` marking a layer produced by this plugin's widgets.
OUTPUT_KEY = "napari_smlm_diffusion_output"
_LIST_EVENTS = ("inserted", "removed", "reordered")


def same_layer(a: Any, b: Any) -> bool:
    """Identity of two layers, looking through napari's public-only proxies."""
    return getattr(a, "__wrapped__", a) is getattr(b, "__wrapped__", b)


def is_input_layer(layer: Any) -> bool:
    """True for image layers that are not results of this plugin (and not RGB/multiscale)."""
    return (isinstance(layer, Image) and OUTPUT_KEY not in layer.metadata
            and not layer.rgb and not layer.multiscale)


class LayerWatcher:
    """Calls ``refresh()`` when layers are added, removed, reordered or renamed.

    Call :meth:`close` when the widget goes away, so that no callback outlives it.
    """

    def __init__(self, viewer: Any, refresh: Callable[[], None]) -> None:
        self._viewer = viewer
        self._refresh = refresh
        self._closed = False
        for name in _LIST_EVENTS:
            getattr(viewer.layers.events, name).connect(self._changed)
        for layer in viewer.layers:
            layer.events.name.connect(self._changed)

    def _changed(self, event: Any = None) -> None:
        if getattr(event, "type", None) == "inserted":
            event.value.events.name.connect(self._changed)
        self._refresh()

    def close(self) -> None:
        """Disconnect from the viewer (once)."""
        if self._closed:
            return
        self._closed = True
        for name in _LIST_EVENTS:
            getattr(self._viewer.layers.events, name).disconnect(self._changed)
        for layer in self._viewer.layers:
            layer.events.name.disconnect(self._changed)


def reset_combo(combo: ComboBox) -> None:
    """Refresh the choices; say so (``changed``) also when the last choice went away, which
    magicgui does not, so that no widget keeps describing a removed layer."""
    before = combo.value
    combo.reset_choices()
    if combo.value is None and before is not None:
        combo.changed.emit(None)


def input_layer_combo(viewer: Any, label: str = "Image") -> tuple[ComboBox, LayerWatcher]:
    """Combo box listing the input image layers of ``viewer``, and the watcher keeping it current.

    When the chosen layer disappears the first remaining one is chosen.
    """

    def choices(_widget: ComboBox) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if is_input_layer(layer)]

    combo = ComboBox(label=label, choices=choices, nullable=False,
                     tooltip="Raw SMLM stack (frames, rows, cols) in camera counts (ADU)")
    return combo, LayerWatcher(viewer, lambda: reset_combo(combo))


def output_role(layer: Any) -> str | None:
    """The role of one of our result layers ("posterior_std", "localizations", ...) or None."""
    return (getattr(layer, "metadata", None) or {}).get(OUTPUT_KEY)


def layer_combo(viewer: Any, label: str, kind: type, preferred: Callable[[Any], bool],
                tooltip: str, nullable: bool = False) -> tuple[ComboBox, LayerWatcher]:
    """Combo box of the viewer's layers of type ``kind``, ``preferred`` ones first, and the
    watcher keeping it current. A preferred layer is chosen as soon as there is one, unless the
    user's choice is itself a preferred layer."""

    def choices(_widget: ComboBox) -> list[tuple[str, Any]]:
        layers = [layer for layer in viewer.layers if isinstance(layer, kind)]
        layers.sort(key=lambda layer: not preferred(layer))  # stable: viewer order otherwise
        return [(layer.name, layer) for layer in layers]

    def refresh() -> None:
        reset_combo(combo)
        options = [value for _name, value in choices(combo)]
        if options and preferred(options[0]) and not (combo.value is not None
                                                      and preferred(combo.value)):
            combo.value = options[0]

    combo = ComboBox(label=label, choices=choices, nullable=nullable, tooltip=tooltip)
    refresh()
    return combo, LayerWatcher(viewer, refresh)
