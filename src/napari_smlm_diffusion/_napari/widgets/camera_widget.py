"""The "Camera & PSF" dock widget: edit, fill from layer metadata, estimate the baseline."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton

from ...camera import PRESETS, CameraError, camera_values_from_metadata
from .estimate import estimate_baseline
from .layer_choice import input_layer_combo
from .settings import CUSTOM, PRESET_FIELDS, VALUE_FIELDS, get_settings
from .texts import show_text, text_label

if TYPE_CHECKING:
    import napari

# field: (label, minimum, maximum, step, tooltip)
FIELDS: dict[str, tuple[str, float, float, float, str]] = {
    "baseline": ("Baseline (ADU)", -1e6, 1e7, 0.1,
                 "Camera offset: the reading of a pixel that receives no light"),
    "sensitivity": ("Sensitivity (e-/ADU)", 0.0, 1e4, 0.001,
                    "Electrons per ADU (conversion factor) at the read-out"),
    "em_gain": ("EM gain", 0.0, 1e5, 0.1,
                "Electron-multiplying gain: 1 for sCMOS and CCD; the calibrated gain for EMCCD"),
    "quantum_efficiency": ("Quantum efficiency", 0.0, 1.0, 0.01,
                           "Fraction of the arriving photons that are detected, in (0, 1]"),
    "read_noise": ("Read noise (e- rms)", 0.0, 1e5, 0.01,
                   "Read noise in electrons rms at the read-out (before the EM gain)"),
    "pixel_size": ("Pixel size (nm)", 0.0, 1e6, 0.1,
                   "Camera pixel size in the sample plane (nm); not changed by a preset"),
    "psf_sigma_nm": ("PSF sigma (nm)", 0.0, 1e6, 0.1,
                     "Standard deviation of the Gaussian PSF in the sample plane (nm)"),
}


class CameraWidget(Container):
    """Camera and PSF settings shared with the other widgets (and saved between sessions).

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._settings = get_settings()
        self.layer, self._watcher = input_layer_combo(napari_viewer, "Image layer")
        self.preset = ComboBox(label="Preset", choices=[*PRESETS, CUSTOM],
                               tooltip="Fill the camera values of a typical camera "
                               "(pixel size and PSF kept)")
        self.fields = {key: _spin_box(key) for key in VALUE_FIELDS}
        self.from_layer = PushButton(text="From layer metadata",
                                     tooltip="Fill the values stored with the image layer")
        self.estimate = PushButton(text="Estimate baseline from data",
                                   tooltip="Baseline from the dark pixels of up to 16 frames "
                                   "(needs dark frames or an unlit part of the sensor)")
        self.source = text_label("Source")
        self.message = text_label("")
        buttons = Container(layout="horizontal", labels=False,
                            widgets=[self.from_layer, self.estimate])
        buttons.margins = (0, 0, 0, 0)
        self.extend([self.layer, self.preset, *self.fields.values(), buttons, self.source,
                     self.message])

        self._show_settings()
        self._settings.events.all.connect(self._show_settings)
        for key, widget in self.fields.items():
            widget.changed.connect(partial(self._on_edit, key))
        self.preset.changed.connect(self._on_preset)
        self.layer.changed.connect(self.fill_from_layer)
        self.from_layer.changed.connect(self.fill_from_layer)
        self.estimate.changed.connect(self.estimate_baseline)
        self.native.destroyed.connect(self._disconnect)
        if self.layer.value is not None:
            self.fill_from_layer()

    # -- settings -> widgets ------------------------------------------------------------------
    def _show_settings(self, _info: Any = None) -> None:
        settings = self._settings
        try:
            for key, widget in self.fields.items():
                with widget.changed.blocked():
                    widget.value = getattr(settings, key)
            with self.preset.changed.blocked():
                self.preset.value = settings.preset
            self.source.value = settings.source
        except RuntimeError:  # the Qt widgets are gone (widget closed)
            self._disconnect()

    def _disconnect(self, *_args: Any) -> None:
        self._settings.events.all.disconnect(self._show_settings, missing_ok=True)
        self._watcher.close()

    def _say(self, text: str, error: bool = False) -> None:
        show_text(self.message, text, error)

    def _apply(self, values: dict[str, float], source: str, done: str = "") -> bool:
        try:
            self._settings.apply(values, source)
        except CameraError as exc:
            # The fields go back to the values in force, which the other widgets use: what the
            # user sees is what runs, and the message says what was refused.
            self._show_settings()
            self._say(f"{exc}; kept the previous value", error=True)
            return False
        self._say(done)
        return True

    # -- widgets -> settings ------------------------------------------------------------------
    def _on_edit(self, key: str, value: float) -> None:
        self._apply({key: value}, "edited")

    def _on_preset(self, name: str) -> None:
        if name in PRESETS:
            camera = PRESETS[name]
            self._apply({k: getattr(camera, k) for k in PRESET_FIELDS}, f"{name} preset")

    def fill_from_layer(self, _value: Any = None) -> None:
        """Fill the values stored in the chosen layer's metadata (those present)."""
        layer = self.layer.value
        if layer is None:
            return
        values = camera_values_from_metadata(layer.metadata)
        if not values:
            self._say(f"Layer '{layer.name}' carries no camera metadata: values unchanged.")
            return
        names = ", ".join(FIELDS[k][0].split(" (")[0] for k in values)
        self._apply(values, f"layer '{layer.name}' metadata", f"From '{layer.name}': {names}.")

    def estimate_baseline(self, _value: Any = None) -> None:
        """Estimate the baseline from the chosen layer's dark pixels (see :mod:`.estimate`)."""
        layer = self.layer.value
        if layer is None:
            self._say("Open an image stack first.", error=True)
            return
        try:
            result = estimate_baseline(layer.data, self._settings.camera())
        except (ValueError, OSError) as exc:
            self._say(f"Cannot estimate the baseline: {exc}", error=True)
            return
        if result.baseline is None:
            self._say(result.message, error=True)
            return
        self._apply({"baseline": round(result.baseline, 1)},
                    f"estimated from '{layer.name}'", result.message)


def _spin_box(key: str) -> FloatSpinBox:
    """A spin box for one camera/PSF field; it reports a value when editing is finished."""
    label, low, high, step, tooltip = FIELDS[key]
    widget = FloatSpinBox(label=label, min=low, max=high, step=step, tooltip=tooltip)
    widget.native.setKeyboardTracking(False)
    return widget
